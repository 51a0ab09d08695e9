import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.reflect.Field;

/** Leaks native memory through Unsafe.allocateMemory: 300 blocks of 1 MiB.
 *  Prints READY, then waits for end of input. */
public class UnsafeLeak {
    public static void main(String[] args) throws Exception {
        Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        sun.misc.Unsafe unsafe = (sun.misc.Unsafe) f.get(null);
        long[] blocks = new long[300];
        for (int i = 0; i < blocks.length; i++) {
            blocks[i] = unsafe.allocateMemory(1 << 20);
            unsafe.setMemory(blocks[i], 1 << 20, (byte) 1);
        }
        System.out.println("READY " + blocks.length);
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        while (in.readLine() != null) { }
        for (long b : blocks) unsafe.freeMemory(b);
        System.out.println("EXIT");
    }
}
