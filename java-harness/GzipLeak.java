import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.GZIPOutputStream;

/** Leaks native zlib memory: threads create GZIPOutputStreams and never close
 *  them, keeping them reachable. Prints READY, then waits for end of input. */
public class GzipLeak {
    static final List<GZIPOutputStream> kept = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        int threads = 3, perThread = Integer.parseInt(args.length > 0 ? args[0] : "500");
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            Thread w = new Thread(() -> {
                try {
                    for (int i = 0; i < perThread; i++) {
                        GZIPOutputStream out = new GZIPOutputStream(new ByteArrayOutputStream());
                        out.write(new byte[] {1, 2, 3});
                        synchronized (kept) { kept.add(out); }
                    }
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            w.start();
            workers.add(w);
        }
        for (Thread w : workers) w.join();
        System.out.println("READY " + kept.size());
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        while (in.readLine() != null) { }
        System.out.println("EXIT " + kept.size());
    }
}
