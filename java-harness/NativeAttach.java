import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.GZIPOutputStream;

/** Native threads attached through JNI (c-harness/jni_attach.c, loaded from
 *  the path in the first argument) call callback, which opens a
 *  GZIPOutputStream (zlib state in native memory) and keeps every 4th one
 *  open. Prints LOADED, and on a line of input runs the second argument's
 *  number of threads (default 400), then as many calls from a Java thread
 *  through the native method fromJava; prints READY <threads that
 *  succeeded>, then waits for end of input. The line marked CALLBACK_LINE is
 *  the one the test expects. */
public class NativeAttach {
    static final List<OutputStream> kept = new ArrayList<>();

    static native int run(int rounds);

    static native int fromJava(int rounds);

    static void callback(int round) throws IOException {
        OutputStream out = new GZIPOutputStream(new ByteArrayOutputStream()); // CALLBACK_LINE
        synchronized (kept) {
            if (round % 4 == 0) kept.add(out);
            else out.close();
        }
    }

    public static void main(String[] args) throws Exception {
        System.load(args[0]);
        int rounds = args.length > 1 ? Integer.parseInt(args[1]) : 400;
        System.out.println("LOADED");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        in.readLine();
        int attached = run(rounds);
        int[] failed = new int[1];
        Thread java = new Thread(() -> failed[0] = fromJava(rounds), "java caller");
        java.start();
        java.join();
        System.out.println("READY " + (failed[0] == 0 ? attached : -1));
        while (in.readLine() != null) { }
        System.out.println("EXIT " + kept.size());
    }
}
