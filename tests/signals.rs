//! The dump signal shared with the program: the program's handler, flags and
//! mask work for every signal it sends itself, it sees its own disposition,
//! and an external `kill` still produces a dump without reaching it.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn program_keeps_its_handler_and_external_kill_dumps() {
    let exe = harness("signals");
    let dir = scratch_dir("signals");
    let mut p = Probe::start(&exe, &[], &dir, &[]);
    p.expect_line("READY0", Duration::from_secs(30));
    p.dump();
    p.write_stdin("go\n");
    for check in [
        "dump_request_does_not_interrupt_read",
        "first_install_sees_default",
        "query_returns_own_handler",
        "self_sent_signals_reach_handler",
        "handler_mask_applied",
        "sa_restart_restarts_read",
        "sa_resethand_is_one_shot",
        "signal_returns_previous",
        "sig_ign_ignores",
        "signal_returns_sig_ign",
        "signal_handler_called",
        "sysv_signal_returns_previous",
        "sysv_signal_is_one_shot",
    ] {
        let line = p.expect_line("CHECK", Duration::from_secs(30));
        assert_eq!(line, format!("CHECK {check} ok"));
    }
    p.expect_line("READY", Duration::from_secs(30));
    assert_eq!(
        p.dump_files().len(),
        1,
        "a signal the program sent itself produced a dump"
    );
    let dump = p.dump();
    // The external kill produced this process's dump.
    assert_eq!(dump.meta["pid"], p.pid().to_string());
    assert_eq!(dump.meta["signal"], "SIGUSR2");
    let handled = p.expect_or_finish();
    assert_eq!(
        handled, "HANDLED 0",
        "the external kill reached the program's handler"
    );
}

trait Finish {
    fn expect_or_finish(self) -> String;
}

impl Finish for Probe {
    fn expect_or_finish(mut self) -> String {
        self.close_stdin();
        let line = self.expect_line("HANDLED", Duration::from_secs(30));
        let (status, stderr) = self.finish(Duration::from_secs(30));
        assert!(status.success(), "{status}\n{stderr}");
        line
    }
}
