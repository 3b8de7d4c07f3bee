// A command-line driver around Hadoop's own NMClient, so tests drive a NodeManager with the
// REAL Java client (as an ApplicationMaster does) instead of imitating it.
//
// Usage: java -cp <pyspark jars>:<classes> NMClientDriver <status|stop> <host:port> <container id>
//            <NMToken identifier, hex> <NMToken password, hex>
//
// The NMToken is put in the client's NMTokenCache for the node, as AMRMClient does with the
// tokens of an allocate response; NMClient then authenticates with it (SASL DIGEST-MD5).
//
// Output (one line of JSON on stdout):
//   exit 0  {"state":"RUNNING","exitStatus":-1000,"diagnostics":"..."} for status; {"stopped":true} for stop
//   exit 3  the client threw: {"exception":"<class>","message":"...","causes":["<class>: <message>", ...]}
//   exit 2  the command line was wrong

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;

import org.apache.hadoop.yarn.api.records.ContainerId;
import org.apache.hadoop.yarn.api.records.ContainerStatus;
import org.apache.hadoop.yarn.api.records.NodeId;
import org.apache.hadoop.yarn.api.records.Token;
import org.apache.hadoop.yarn.client.api.NMClient;
import org.apache.hadoop.yarn.conf.YarnConfiguration;

public final class NMClientDriver {
    private NMClientDriver() {}

    public static void main(String[] args) {
        PrintStream out = System.out;
        System.setOut(System.err); // library output never reaches the result line
        if (args.length != 5 || !(args[0].equals("status") || args[0].equals("stop"))) {
            out.println("{\"exception\":\"usage\",\"message\":\"status|stop host:port container-id token-id-hex token-password-hex\"}");
            System.exit(2);
        }
        NMClient client = NMClient.createNMClient();
        try {
            YarnConfiguration conf = new YarnConfiguration();
            conf.setInt("ipc.client.connect.max.retries", 0);
            client.init(conf);
            client.start();
            NodeId node = NodeId.fromString(args[1]);
            Token token = Token.newInstance(hex(args[3]), "NMToken", hex(args[4]), args[1]);
            client.getNMTokenCache().setToken(args[1], token);
            ContainerId container = ContainerId.fromString(args[2]);
            if (args[0].equals("status")) {
                ContainerStatus status = client.getContainerStatus(container, node);
                out.println("{\"state\":" + quote(status.getState().name()) + ",\"exitStatus\":" + status.getExitStatus()
                    + ",\"diagnostics\":" + quote(status.getDiagnostics()) + "}");
            } else {
                client.stopContainer(container, node);
                out.println("{\"stopped\":true}");
            }
            client.stop();
            System.exit(0);
        } catch (Throwable t) {
            List<String> causes = new ArrayList<>();
            for (Throwable c = t.getCause(); c != null && causes.size() < 8; c = c.getCause()) {
                causes.add(quote(c.getClass().getName() + ": " + c.getMessage()));
            }
            out.println("{\"exception\":" + quote(t.getClass().getName()) + ",\"message\":" + quote(String.valueOf(t.getMessage()))
                + ",\"causes\":[" + String.join(",", causes) + "]}");
            System.exit(3);
        }
    }

    private static byte[] hex(String text) {
        byte[] bytes = new byte[text.length() / 2];
        for (int i = 0; i < bytes.length; i++) {
            bytes[i] = (byte) Integer.parseInt(text.substring(2 * i, 2 * i + 2), 16);
        }
        return bytes;
    }

    private static String quote(String text) {
        if (text == null) {
            return "null";
        }
        StringBuilder b = new StringBuilder("\"");
        for (char ch : text.toCharArray()) {
            switch (ch) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (ch < 0x20) {
                        b.append(String.format("\\u%04x", (int) ch));
                    } else {
                        b.append(ch);
                    }
            }
        }
        return b.append('"').toString();
    }
}
