//! DWARF call-frame information (`.eh_frame`) on x86_64: for a code address,
//! how to find its caller. Only the rules compilers emit for ordinary frames
//! are understood (CFA = %rsp or %rbp + offset, the return address just below
//! the CFA, %rbp unchanged or saved below it), and signal frames (whose CFI
//! the kernel's frame layout makes unnecessary); anything else is
//! `Unsupported`, and that stack is unwound by libgcc instead.

/// DWARF register numbers (System V x86_64 psABI).
const RBP: u64 = 6;
const RSP: u64 = 7;
const RETURN_ADDRESS: u64 = 16;

/// What the CFI of one code address says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// An ordinary frame: CFA = (%rbp if `cfa_rbp`, else %rsp) + `cfa_offset`;
    /// the return address is at CFA - 8; the caller's %rbp at CFA - 8 *
    /// `rbp_slot`, or %rbp is unchanged when `rbp_slot` is 0.
    Frame {
        cfa_rbp: bool,
        cfa_offset: u32,
        rbp_slot: u8,
    },
    /// The outermost frame (`_start`, a thread's first frame).
    End,
    /// The signal trampoline (`__restore_rt`): the interrupted registers are
    /// in the `ucontext_t` the stack pointer points at.
    Signal,
    /// CFI this unwinder does not follow (expressions, realigned stacks, ...).
    Unsupported,
    /// No object we can see has CFI for the address (JIT code, or a bad
    /// return address).
    Missing,
}

/// Largest CFA offset a `Rule::Frame` carries (the packed cache form has 20 bits).
pub const MAX_CFA_OFFSET: u32 = (1 << 20) - 1;

/// The object containing an address, as `_dl_find_object` reports it.
pub struct Object {
    pub start: usize,
    pub end: usize,
    /// Its `PT_GNU_EH_FRAME` segment (`.eh_frame_hdr`), or 0.
    pub eh_frame_hdr: usize,
}

/// The rule for `pc` in `object`. `pc` is an address inside the instruction
/// of interest (for a caller frame: its return address minus one).
pub fn rule_for(object: &Object, pc: usize) -> Rule {
    if object.eh_frame_hdr == 0 {
        return Rule::Missing;
    }
    let memory = Memory {
        start: object.start,
        end: object.end,
    };
    match find_fde(&memory, object.eh_frame_hdr, pc) {
        Some(Some(fde)) if fde.signal => Rule::Signal,
        Some(Some(fde)) => run(&memory, &fde, pc).unwrap_or(Rule::Unsupported),
        Some(None) => Rule::Missing,
        None => Rule::Unsupported,
    }
}

/// The code range [start, end) of the FDE covering `pc` in `object`.
pub fn fde_range(object: &Object, pc: usize) -> Option<(usize, usize)> {
    let memory = Memory {
        start: object.start,
        end: object.end,
    };
    if object.eh_frame_hdr == 0 {
        return None;
    }
    let fde = find_fde(&memory, object.eh_frame_hdr, pc)??;
    Some((fde.pc_begin, fde.pc_end))
}

/// The object's mapped range: every read of CFI stays inside it, so damaged
/// CFI cannot send a read outside the object.
struct Memory {
    start: usize,
    end: usize,
}

impl Memory {
    fn at(&self, pos: usize, end: usize) -> Option<Reader> {
        (self.start <= pos && pos <= end && end <= self.end).then_some(Reader { pos, end })
    }
}

/// A cursor over bytes of a loaded object, bounded by `end`.
struct Reader {
    pos: usize,
    end: usize,
}

impl Reader {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.end.checked_sub(self.pos)? < N {
            return None;
        }
        // SAFETY: [pos, pos + N) lies inside the object's mapping (checked
        // by `Memory::at` when the reader was made, and above).
        let value = unsafe { core::ptr::read_unaligned(self.pos as *const [u8; N]) };
        self.pos += N;
        Some(value)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.bytes().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }

    /// LEB128: the value's low 64 bits, the bits read, and the last byte.
    fn leb(&mut self) -> Option<(u64, u32, u8)> {
        let (mut value, mut shift) = (0u64, 0u32);
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            shift = shift.saturating_add(7);
            if byte & 0x80 == 0 {
                return Some((value, shift, byte));
            }
        }
    }

    fn uleb(&mut self) -> Option<u64> {
        self.leb().map(|(value, _, _)| value)
    }

    fn sleb(&mut self) -> Option<i64> {
        let (value, shift, last) = self.leb()?;
        let negative = shift < 64 && last & 0x40 != 0;
        Some(if negative {
            value as i64 | -1i64 << shift
        } else {
            value as i64
        })
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        let n = usize::try_from(n).ok()?;
        if self.end.checked_sub(self.pos)? < n {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// A pointer in `DW_EH_PE_*` encoding `enc`; `data_base` is the start of
    /// `.eh_frame_hdr` (for `datarel`).
    fn pointer(&mut self, enc: u8, data_base: usize) -> Option<usize> {
        if enc & 0x80 != 0 {
            return None;
        }
        let field = self.pos;
        let raw = match enc & 0x0f {
            0x00 | 0x04 | 0x0c => self.u64()?,
            0x01 => self.uleb()?,
            0x02 => u64::from(self.u16()?),
            0x03 => u64::from(self.u32()?),
            0x09 => self.sleb()? as u64,
            0x0a => self.u16()? as i16 as i64 as u64,
            0x0b => self.u32()? as i32 as i64 as u64,
            _ => return None,
        };
        let base = match enc & 0x70 {
            0x00 => 0,
            0x10 => field,
            0x30 => data_base,
            _ => return None,
        };
        Some((base as u64).wrapping_add(raw) as usize)
    }
}

/// An FDE: the code range it covers and its CIE's parameters.
struct Fde {
    pc_begin: usize,
    /// The end of the code it covers.
    pc_end: usize,
    code_align: u64,
    data_align: i64,
    /// Pointer encoding of `DW_CFA_set_loc` operands.
    encoding: u8,
    /// The CIE marks a signal frame ('S').
    signal: bool,
    /// The CIE's initial instructions, then the FDE's own: (start, end).
    cie_program: (usize, usize),
    program: (usize, usize),
}

/// The FDE covering `pc`, through `.eh_frame_hdr`'s sorted table. `None`:
/// CFI in a form not followed here; `Some(None)`: no FDE covers `pc`.
fn find_fde(memory: &Memory, hdr: usize, pc: usize) -> Option<Option<Fde>> {
    let mut r = memory.at(hdr, memory.end)?;
    let [version, frame_enc, count_enc, table_enc] = r.bytes::<4>()?;
    // The table must be the usual sorted pairs of 4-byte hdr-relative values.
    if version != 1 || count_enc == 0xff || table_enc != 0x3b {
        return None;
    }
    r.pointer(frame_enc, hdr)?;
    let count = r.pointer(count_enc, hdr)?;
    let table = r.pos;
    let entry = |i: usize| -> Option<(usize, usize)> {
        let at = table.checked_add(i.checked_mul(8)?)?;
        let mut e = memory.at(at, at.checked_add(8)?)?;
        let start = hdr.wrapping_add(e.u32()? as i32 as isize as usize);
        let fde = hdr.wrapping_add(e.u32()? as i32 as isize as usize);
        Some((start, fde))
    };
    // The last entry starting at or below pc.
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry(mid)?.0 <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        return Some(None);
    }
    let (fde, range) = parse_fde(memory, entry(lo - 1)?.1)?;
    Some((pc < fde.pc_begin.wrapping_add(range)).then_some(fde))
}

/// An entry's (start of contents, end): after its length field.
fn entry_bounds(memory: &Memory, at: usize) -> Option<Reader> {
    let mut r = memory.at(at, memory.end)?;
    let length = match r.u32()? {
        0xffff_ffff => r.u64()?,
        n => u64::from(n),
    };
    let end = r.pos.checked_add(usize::try_from(length).ok()?)?;
    memory.at(r.pos, end)
}

/// Parses the FDE at `at` and its CIE: the FDE and the length of its range.
fn parse_fde(memory: &Memory, at: usize) -> Option<(Fde, usize)> {
    let mut r = entry_bounds(memory, at)?;
    let id_field = r.pos;
    let cie_offset = r.u32()? as usize;
    if cie_offset == 0 {
        return None;
    }
    let cie = parse_cie(memory, id_field.checked_sub(cie_offset)?)?;
    let pc_begin = r.pointer(cie.encoding, 0)?;
    let range = r.pointer(cie.encoding & 0x0f, 0)?;
    if cie.augmented {
        let n = r.uleb()?;
        r.skip(n)?;
    }
    let fde = Fde {
        pc_begin,
        pc_end: pc_begin.wrapping_add(range),
        code_align: cie.code_align,
        data_align: cie.data_align,
        encoding: cie.encoding,
        signal: cie.signal,
        cie_program: cie.program,
        program: (r.pos, r.end),
    };
    Some((fde, range))
}

struct Cie {
    code_align: u64,
    data_align: i64,
    encoding: u8,
    augmented: bool,
    signal: bool,
    program: (usize, usize),
}

/// `None`: a CIE not followed here.
fn parse_cie(memory: &Memory, at: usize) -> Option<Cie> {
    let mut r = entry_bounds(memory, at)?;
    if r.u32()? != 0 {
        return None;
    }
    let version = r.u8()?;
    if version != 1 && version != 3 {
        return None;
    }
    let mut augmentation = [0u8; 8];
    let mut len = 0;
    loop {
        let c = r.u8()?;
        if c == 0 {
            break;
        }
        *augmentation.get_mut(len)? = c;
        len += 1;
    }
    let augmentation = &augmentation[..len];
    let code_align = r.uleb()?;
    let data_align = r.sleb()?;
    let return_register = if version == 1 {
        u64::from(r.u8()?)
    } else {
        r.uleb()?
    };
    if return_register != RETURN_ADDRESS {
        return None;
    }
    let mut cie = Cie {
        code_align,
        data_align,
        encoding: 0,
        augmented: false,
        signal: false,
        program: (0, 0),
    };
    if let Some((b'z', rest)) = augmentation.split_first() {
        cie.augmented = true;
        let n = r.uleb()?;
        let data_end = r.pos.checked_add(usize::try_from(n).ok()?)?;
        for c in rest {
            match c {
                b'R' => cie.encoding = r.u8()?,
                b'P' => {
                    // Only skipped: its target is never read.
                    let enc = r.u8()?;
                    r.pointer(enc & 0x7f, 0)?;
                }
                b'L' => {
                    r.u8()?;
                }
                b'S' => cie.signal = true,
                _ => return None,
            }
        }
        r.pos = data_end;
        if r.pos > r.end {
            return None;
        }
    } else if !augmentation.is_empty() {
        return None;
    }
    cie.program = (r.pos, r.end);
    Some(cie)
}

/// Where a register of the caller is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Saved {
    Unchanged,
    Undefined,
    /// At CFA + offset.
    At(i64),
    /// Anywhere else (another register, an expression).
    Elsewhere,
}

#[derive(Clone, Copy)]
struct Row {
    /// (register, offset), or None for a CFA expression.
    cfa: Option<(u64, i64)>,
    rbp: Saved,
    return_address: Saved,
}

/// `DW_CFA_remember_state` depth followed.
const STATES: usize = 8;

/// A factored offset times the CIE's data alignment; `None` (CFI not
/// followed) if that overflows: the operands are the object's, not ours.
fn factored(offset: i64, data_align: i64) -> Option<i64> {
    offset.checked_mul(data_align)
}

/// A CFA program's effect on the row as it runs.
struct Machine {
    row: Row,
    /// The row after the CIE's program (`DW_CFA_restore` goes back to it).
    initial: Row,
    saved: [Row; STATES],
    depth: usize,
}

/// What an instruction does to the location.
enum Next {
    /// Nothing: the next instruction applies at the same location.
    Same,
    /// Advance by this many code units.
    Advance(u64),
    /// Go to this address.
    To(usize),
}

impl Machine {
    /// Decodes and applies one instruction, `op` already read; None if
    /// the CFI is malformed or not followed.
    fn execute(&mut self, op: u8, r: &mut Reader, fde: &Fde) -> Option<Next> {
        Some(match op >> 6 {
            1 => Next::Advance(u64::from(op & 0x3f)),
            2 => {
                let offset = factored(r.uleb()? as i64, fde.data_align)?;
                set(&mut self.row, u64::from(op & 0x3f), Saved::At(offset));
                Next::Same
            }
            3 => {
                restore(&mut self.row, &self.initial, u64::from(op & 0x3f));
                Next::Same
            }
            _ => match op {
                0x00 | 0x2e => {
                    if op == 0x2e {
                        r.uleb()?;
                    }
                    Next::Same
                }
                0x01 => Next::To(r.pointer(fde.encoding, 0)?),
                0x02 => Next::Advance(u64::from(r.u8()?)),
                0x03 => Next::Advance(u64::from(r.u16()?)),
                0x04 => Next::Advance(u64::from(r.u32()?)),
                0x05 => {
                    let reg = r.uleb()?;
                    let offset = factored(r.uleb()? as i64, fde.data_align)?;
                    set(&mut self.row, reg, Saved::At(offset));
                    Next::Same
                }
                0x06 => {
                    let reg = r.uleb()?;
                    restore(&mut self.row, &self.initial, reg);
                    Next::Same
                }
                0x07 => {
                    let reg = r.uleb()?;
                    set(&mut self.row, reg, Saved::Undefined);
                    Next::Same
                }
                0x08 => {
                    let reg = r.uleb()?;
                    set(&mut self.row, reg, Saved::Unchanged);
                    Next::Same
                }
                0x09 => {
                    let reg = r.uleb()?;
                    r.uleb()?;
                    set(&mut self.row, reg, Saved::Elsewhere);
                    Next::Same
                }
                0x0a => {
                    *self.saved.get_mut(self.depth)? = self.row;
                    self.depth += 1;
                    Next::Same
                }
                0x0b => {
                    // The CFA rule is part of the state, as libgcc keeps
                    // it: epilogues remember, pop, return, then restore.
                    self.depth = self.depth.checked_sub(1)?;
                    self.row = *self.saved.get(self.depth)?;
                    Next::Same
                }
                0x0c => {
                    self.row.cfa = Some((r.uleb()?, r.uleb()? as i64));
                    Next::Same
                }
                0x0d => {
                    let reg = r.uleb()?;
                    self.row.cfa = Some((reg, self.row.cfa?.1));
                    Next::Same
                }
                0x0e => {
                    let offset = r.uleb()? as i64;
                    self.row.cfa = Some((self.row.cfa?.0, offset));
                    Next::Same
                }
                0x0f => {
                    let n = r.uleb()?;
                    r.skip(n)?;
                    self.row.cfa = None;
                    Next::Same
                }
                0x10 | 0x14 | 0x15 | 0x16 => {
                    let reg = r.uleb()?;
                    if op == 0x15 {
                        r.sleb()?;
                    } else {
                        let n = r.uleb()?;
                        if op != 0x14 {
                            r.skip(n)?;
                        }
                    }
                    set(&mut self.row, reg, Saved::Elsewhere);
                    Next::Same
                }
                0x11 => {
                    let reg = r.uleb()?;
                    let offset = factored(r.sleb()?, fde.data_align)?;
                    set(&mut self.row, reg, Saved::At(offset));
                    Next::Same
                }
                0x12 => {
                    let reg = r.uleb()?;
                    self.row.cfa = Some((reg, factored(r.sleb()?, fde.data_align)?));
                    Next::Same
                }
                0x13 => {
                    let offset = factored(r.sleb()?, fde.data_align)?;
                    self.row.cfa = Some((self.row.cfa?.0, offset));
                    Next::Same
                }
                0x2f => {
                    let reg = r.uleb()?;
                    let offset = factored((r.uleb()? as i64).checked_neg()?, fde.data_align)?;
                    set(&mut self.row, reg, Saved::At(offset));
                    Next::Same
                }
                _ => return None,
            },
        })
    }
}

/// Runs the CIE's and the FDE's CFA programs up to `pc`.
fn run(memory: &Memory, fde: &Fde, pc: usize) -> Option<Rule> {
    let row = Row {
        cfa: None,
        rbp: Saved::Unchanged,
        return_address: Saved::Unchanged,
    };
    let mut m = Machine {
        row,
        initial: row,
        saved: [row; STATES],
        depth: 0,
    };
    let mut loc = fde.pc_begin;
    for (program, is_cie) in [(fde.cie_program, true), (fde.program, false)] {
        let mut r = memory.at(program.0, program.1)?;
        while r.pos < r.end {
            let op = r.u8()?;
            let next = match m.execute(op, &mut r, fde)? {
                Next::Same => continue,
                Next::Advance(delta) => {
                    (loc as u64).wrapping_add(delta.wrapping_mul(fde.code_align)) as usize
                }
                Next::To(to) => to,
            };
            if next > pc {
                return finish(&m.row);
            }
            loc = next;
        }
        if is_cie {
            m.initial = m.row;
        }
    }
    finish(&m.row)
}

fn set(row: &mut Row, reg: u64, saved: Saved) {
    match reg {
        RBP => row.rbp = saved,
        RETURN_ADDRESS => row.return_address = saved,
        _ => {}
    }
}

fn restore(row: &mut Row, initial: &Row, reg: u64) {
    match reg {
        RBP => row.rbp = initial.rbp,
        RETURN_ADDRESS => row.return_address = initial.return_address,
        _ => {}
    }
}

/// The row as a `Rule`, when it is one this unwinder follows.
fn finish(row: &Row) -> Option<Rule> {
    if row.return_address == Saved::Undefined {
        return Some(Rule::End);
    }
    let (reg, offset) = row.cfa?;
    if (reg != RSP && reg != RBP) || row.return_address != Saved::At(-8) {
        return Some(Rule::Unsupported);
    }
    let Ok(cfa_offset) = u32::try_from(offset) else {
        return Some(Rule::Unsupported);
    };
    let rbp_slot = match row.rbp {
        Saved::Unchanged | Saved::Undefined => 0,
        Saved::At(at) if at < 0 && at % 8 == 0 => match u8::try_from(at.unsigned_abs() / 8) {
            Ok(slot) => slot,
            Err(_) => return Some(Rule::Unsupported),
        },
        _ => return Some(Rule::Unsupported),
    };
    if cfa_offset > MAX_CFA_OFFSET {
        return Some(Rule::Unsupported);
    }
    Some(Rule::Frame {
        cfa_rbp: reg == RBP,
        cfa_offset,
        rbp_slot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a CFA program (no CIE part) for pc 0.
    fn run_program(program: &[u8], data_align: i64) -> Option<Rule> {
        let (start, end) = (
            program.as_ptr() as usize,
            program.as_ptr() as usize + program.len(),
        );
        let fde = Fde {
            pc_begin: 0,
            pc_end: usize::MAX,
            code_align: 1,
            data_align,
            encoding: 0,
            signal: false,
            cie_program: (start, start),
            program: (start, end),
        };
        run(&Memory { start, end }, &fde, 0)
    }

    #[test]
    fn offsets_that_overflow_are_not_followed() {
        // CFA = %rsp + 8; return address at CFA + 1 * data_align; %rbp at
        // CFA + 2 * data_align (DW_CFA_offset_extended_sf).
        let program = [0x0c, 0x07, 0x08, 0x90, 0x01, 0x11, 0x06, 0x02];
        let frame = Rule::Frame {
            cfa_rbp: false,
            cfa_offset: 8,
            rbp_slot: 2,
        };
        assert_eq!(run_program(&program, -8), Some(frame));
        assert_eq!(run_program(&program, i64::MAX), None);
        let row = Row {
            cfa: Some((RSP, 8)),
            rbp: Saved::At(i64::MIN),
            return_address: Saved::At(-8),
        };
        assert_eq!(finish(&row), Some(Rule::Unsupported));
    }
}
