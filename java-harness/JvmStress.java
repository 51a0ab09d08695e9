import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.List;

/** A JVM under load, for tests/python/test_jvm_load.py. Its native memory
 *  goes through StressPlugin, a class defined by a throwaway class loader per
 *  "generation": each generation opens streams through its own StressPlugin
 *  (keeping its first open, up to 1000: a leak that outlives the class),
 *  then drops the loader, which the GC collects and unloads with its class.
 *
 *  `JvmStress load`: the main thread runs generations (200 streams each)
 *  while another thread calls System.gc() in storms; prints READY once the
 *  first generation's loader was collected. On "stop" (stdin) it collects
 *  every generation's loader and prints DONE <generations> <collected>
 *  <kept>, then returns (exit 0); on "exit N", System.exit(N) at once.
 *
 *  `JvmStress idle`: prints READY, then does what stdin says: "open N" opens
 *  N streams through a new generation and keeps its loader (OPENED <n>),
 *  "drop" drops that loader and collects it (COLLECTED <n>), "exit N"
 *  System.exit(N). The line marked PLUGIN_CALL_LINE is the one the test
 *  expects below StressPlugin.open. */
public class JvmStress {
    static final List<OutputStream> kept = new ArrayList<>();
    static final byte[] data = new byte[4096];
    static byte[] pluginCode;
    static volatile boolean stop;

    /** What StressPlugin is, to the classes that use it. */
    public interface Opener {
        OutputStream open(byte[] data) throws IOException;
    }

    /** Defines StressPlugin itself (a new class each time), never through its parent. */
    static final class OneClassLoader extends ClassLoader {
        OneClassLoader() {
            super(JvmStress.class.getClassLoader());
        }

        @Override
        protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
            if (!name.equals("StressPlugin")) return super.loadClass(name, resolve);
            synchronized (getClassLoadingLock(name)) {
                Class<?> c = findLoadedClass(name);
                return c != null ? c : defineClass(name, pluginCode, 0, pluginCode.length);
            }
        }
    }

    /** Opens `n` streams through a new loader's StressPlugin; returns the loader. */
    static ClassLoader generation(int n) throws Exception {
        ClassLoader loader = new OneClassLoader();
        Opener plugin = (Opener) loader.loadClass("StressPlugin").getDeclaredConstructor().newInstance();
        for (int i = 0; i < n; i++) {
            OutputStream out = plugin.open(data); // PLUGIN_CALL_LINE
            if (i == 0 && kept.size() < 1000) {
                kept.add(out);
            } else {
                out.close();
            }
        }
        return loader;
    }

    /** Calls System.gc() until every reference in `refs` is cleared (at most
     *  200 times); how many are. */
    static int collect(List<WeakReference<ClassLoader>> refs) {
        for (int i = 0; i < 200 && refs.stream().anyMatch(r -> r.get() != null); i++) System.gc();
        return (int) refs.stream().filter(r -> r.get() == null).count();
    }

    public static void main(String[] args) throws Exception {
        for (int i = 0; i < data.length; i++) data[i] = (byte) (i * 31 % 251);
        try (InputStream in = JvmStress.class.getResourceAsStream("/StressPlugin.class")) {
            pluginCode = in.readAllBytes();
        }
        BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in));
        if (args.length > 0 && args[0].equals("idle")) {
            idle(stdin);
        } else {
            load(stdin);
        }
    }

    static void idle(BufferedReader stdin) throws Exception {
        System.out.println("READY");
        ClassLoader loader = null;
        List<WeakReference<ClassLoader>> refs = new ArrayList<>();
        for (String line; (line = stdin.readLine()) != null; ) {
            String[] w = line.split(" ");
            if (w[0].equals("open")) {
                loader = generation(Integer.parseInt(w[1]));
                refs.add(new WeakReference<>(loader));
                System.out.println("OPENED " + refs.size());
            } else if (w[0].equals("drop")) {
                loader = null;
                System.out.println("COLLECTED " + collect(refs));
            } else if (w[0].equals("exit")) {
                System.exit(Integer.parseInt(w[1]));
            }
        }
    }

    static void load(BufferedReader stdin) throws Exception {
        Thread commands = new Thread(() -> {
            try {
                for (String line; (line = stdin.readLine()) != null && !line.equals("stop"); ) {
                    if (line.startsWith("exit ")) System.exit(Integer.parseInt(line.substring(5)));
                }
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
            stop = true;
        });
        Thread storms = new Thread(() -> {
            try {
                while (!stop) {
                    for (int i = 0; i < 5; i++) System.gc();
                    Thread.sleep(50);
                }
            } catch (InterruptedException e) {
                throw new RuntimeException(e);
            }
        });
        List<WeakReference<ClassLoader>> refs = new ArrayList<>();
        refs.add(new WeakReference<>(generation(200)));
        if (collect(refs) != 1) throw new IllegalStateException("the first generation's loader was not collected");
        System.out.println("READY");
        commands.start();
        storms.start();
        while (!stop) refs.add(new WeakReference<>(generation(200)));
        storms.join();
        System.out.printf("DONE %d %d %d%n", refs.size(), collect(refs), kept.size());
    }
}
