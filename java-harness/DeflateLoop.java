import java.io.ByteArrayOutputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.util.zip.GZIPOutputStream;

/** A JVM workload heavy in native allocation: compresses 4 KiB buffers with
 *  GZIPOutputStream (zlib state malloc'd and freed each time), closing what it
 *  opens. Warms up for the first argument's seconds (default 2), then counts
 *  streams for the second's (default 5) and prints OPS <streams per second>
 *  CPU_OPS <streams per second of this thread's CPU time> (less disturbed by
 *  other load on a shared machine: a sample's cost is on this thread).
 *  With a third argument N, compresses N streams and prints DONE instead. */
public class DeflateLoop {
    static long run(byte[] data, long nanos, long limit) throws Exception {
        long end = System.nanoTime() + nanos, n = 0;
        while (n < limit && System.nanoTime() < end) {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream(1024);
            try (GZIPOutputStream out = new GZIPOutputStream(bytes)) {
                out.write(data);
            }
            n++;
        }
        return n;
    }

    public static void main(String[] args) throws Exception {
        double warm = args.length > 0 ? Double.parseDouble(args[0]) : 2, measure = args.length > 1 ? Double.parseDouble(args[1]) : 5;
        byte[] data = new byte[4096];
        for (int i = 0; i < data.length; i++) data[i] = (byte) (i * 31 % 251);
        if (args.length > 2) {
            run(data, Long.MAX_VALUE / 2, Long.parseLong(args[2]));
            System.out.println("DONE");
            return;
        }
        ThreadMXBean threads = ManagementFactory.getThreadMXBean();
        run(data, (long) (warm * 1e9), Long.MAX_VALUE);
        long cpu = threads.getCurrentThreadCpuTime(), start = System.nanoTime();
        long n = run(data, (long) (measure * 1e9), Long.MAX_VALUE);
        cpu = threads.getCurrentThreadCpuTime() - cpu;
        System.out.printf("OPS %.0f CPU_OPS %.0f%n", n / ((System.nanoTime() - start) / 1e9), n / (cpu / 1e9));
    }
}
