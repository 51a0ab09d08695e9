import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.GZIPOutputStream;

/** Leaks native zlib memory through two levels of its own methods:
 *  LayeredLeak.main -> Opener.open -> Wrapper.wrap -> new GZIPOutputStream,
 *  never closed. Prints READY, then waits for end of input. Argument: streams
 *  to open (default 3000; enough that C2 compiles the loop). */
public class LayeredLeak {
    static final List<OutputStream> kept = new ArrayList<>();

    static class Wrapper {
        static OutputStream wrap(OutputStream out) throws IOException {
            return new GZIPOutputStream(out); // WRAP_LINE
        }
    }

    static class Opener {
        static OutputStream open() throws IOException {
            return Wrapper.wrap(new ByteArrayOutputStream()); // OPEN_LINE
        }
    }

    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args.length > 0 ? args[0] : "3000");
        for (int i = 0; i < n; i++) {
            kept.add(Opener.open()); // MAIN_LINE
        }
        System.out.println("READY " + kept.size());
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        while (in.readLine() != null) { }
        System.out.println("EXIT " + kept.size());
    }
}
