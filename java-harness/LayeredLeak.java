import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.GZIPOutputStream;

/** Leaks native zlib memory through two levels of its own methods:
 *  LayeredLeak.main -> Opener.open -> Wrapper.wrap -> new GZIPOutputStream.
 *  Opens N streams (default 20000, enough for C2 to compile the loop) and
 *  keeps every K-th one (default 50) unclosed; the others are closed, which
 *  frees their zlib state. Prints READY <kept>, then waits for end of input.
 *  The *_LINE comments mark the lines the test expects in the stacks. */
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
        int n = Integer.parseInt(args.length > 0 ? args[0] : "20000");
        int every = Integer.parseInt(args.length > 1 ? args[1] : "50");
        for (int i = 0; i < n; i++) {
            OutputStream out = Opener.open(); // MAIN_LINE
            if (i % every == 0) {
                kept.add(out);
            } else {
                out.close();
            }
        }
        System.out.println("READY " + kept.size());
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        while (in.readLine() != null) { }
        System.out.println("EXIT " + kept.size());
    }
}
