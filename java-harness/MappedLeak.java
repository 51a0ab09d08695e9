import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

/** Leaks file mappings (FileChannel.map: mmap, outside malloc): on a line of
 *  input, MappedLeak.leak maps a file of 128 MiB (argument: its path) in 32
 *  pieces of 4 MiB, reads a byte of every page (so RSS holds them) and keeps
 *  the buffers referenced. Prints READY, then GREW <bytes> once grown, then
 *  waits for end of input. */
public class MappedLeak {
    static final int PIECES = 32, SIZE = 4 << 20, PAGE = 4096;
    static final List<MappedByteBuffer> kept = new ArrayList<>();

    static long leak(FileChannel channel) throws Exception {
        long sum = 0;
        for (int i = 0; i < PIECES; i++) {
            MappedByteBuffer b = channel.map(FileChannel.MapMode.READ_WRITE, (long) i * SIZE, SIZE);
            for (int at = 0; at < SIZE; at += PAGE) sum += b.get(at);
            kept.add(b);
        }
        return sum;
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        FileChannel channel = FileChannel.open(Path.of(args[0]), StandardOpenOption.CREATE,
                StandardOpenOption.READ, StandardOpenOption.WRITE);
        System.out.println("READY");
        System.out.flush();
        if (in.readLine() == null) return;
        long sum = leak(channel);
        System.out.println("GREW " + (long) PIECES * SIZE + " " + sum);
        System.out.flush();
        while (in.readLine() != null) { }
        System.out.println("EXIT " + kept.size());
    }
}
