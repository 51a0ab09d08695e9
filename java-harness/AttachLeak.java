import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.reflect.Field;

/** Started without the library, for `leakprobe attach` through HotSpot's
 *  attach mechanism: prints READY; on "leak" allocates 64 blocks of 1 MiB with
 *  Unsafe.allocateMemory from leakHere() and prints LEAKED; on end of input
 *  frees them and prints EXIT. */
public class AttachLeak {
    static sun.misc.Unsafe unsafe;
    static long[] blocks = new long[64];

    static void leakHere() {
        for (int i = 0; i < blocks.length; i++) {
            blocks[i] = unsafe.allocateMemory(1 << 20);
            unsafe.setMemory(blocks[i], 1 << 20, (byte) 1);
        }
    }

    public static void main(String[] args) throws Exception {
        Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        unsafe = (sun.misc.Unsafe) f.get(null);
        System.out.println("READY");
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.equals("leak")) {
                leakHere();
                System.out.println("LEAKED");
                System.out.flush();
            }
        }
        for (long b : blocks) if (b != 0) unsafe.freeMemory(b);
        System.out.println("EXIT");
    }
}
