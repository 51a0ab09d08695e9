import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.util.zip.GZIPOutputStream;

/** Defined anew by each of JvmStress's throwaway class loaders (never used
 *  through the application class loader), so its method belongs to a class
 *  that is unloaded with its loader. Opens a GZIPOutputStream (zlib state in
 *  native memory) on the line marked PLUGIN_LINE, which the test expects. */
public class StressPlugin implements JvmStress.Opener {
    @Override
    public OutputStream open(byte[] data) throws IOException {
        OutputStream out = new GZIPOutputStream(new ByteArrayOutputStream(1024)); // PLUGIN_LINE
        out.write(data);
        return out;
    }
}
