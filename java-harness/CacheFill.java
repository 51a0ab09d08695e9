import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.Deflater;

/** The JVM shape of a leak whose allocation is deep in the JDK: `Cache.fill`
 *  keeps Deflaters it never end()s, so zlib's state (malloc'd under
 *  java.util.zip.Deflater's native init) stays live. Each line on stdin adds
 *  the first argument's Deflaters (default 400) and prints GREW <total>;
 *  READY first, EXIT at end of input. */
public class CacheFill {
    static final class Cache {
        final List<Deflater> kept = new ArrayList<>();

        void fill(int n) {
            for (int i = 0; i < n; i++) {
                kept.add(new Deflater(Deflater.BEST_COMPRESSION)); // FILL_LINE
            }
        }
    }

    public static void main(String[] args) throws Exception {
        int each = args.length > 0 ? Integer.parseInt(args[0]) : 400;
        Cache cache = new Cache();
        System.out.println("READY");
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        while (in.readLine() != null) {
            cache.fill(each);
            System.out.println("GREW " + cache.kept.size());
            System.out.flush();
        }
        System.out.println("EXIT " + cache.kept.size());
    }
}
