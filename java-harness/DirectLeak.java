import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/** Leaks direct ByteBuffers (native memory through Unsafe.allocateMemory,
 *  that is malloc): on a line of input, 64 buffers of 2 MiB made in
 *  DirectLeak.leak and kept referenced. Prints READY, then GREW <bytes>
 *  once grown, then waits for end of input. */
public class DirectLeak {
    static final int BUFFERS = 64, SIZE = 2 << 20;
    static final List<ByteBuffer> kept = new ArrayList<>();

    static void leak() {
        for (int i = 0; i < BUFFERS; i++) {
            kept.add(ByteBuffer.allocateDirect(SIZE));
        }
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        System.out.println("READY");
        System.out.flush();
        if (in.readLine() == null) return;
        leak();
        System.out.println("GREW " + (long) BUFFERS * SIZE);
        System.out.flush();
        while (in.readLine() != null) { }
        System.out.println("EXIT " + kept.size());
    }
}
