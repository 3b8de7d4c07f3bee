import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;

import org.apache.hadoop.shaded.javax.ws.rs.client.Client;
import org.apache.hadoop.yarn.client.cli.LogsCLI;
import org.apache.hadoop.yarn.conf.YarnConfiguration;

/**
 * Hadoop's own {@code yarn logs} (LogsCLI), started the way {@code bin/yarn logs} starts it, less
 * one step: LogsCLI.run first builds a JAX-RS client for the NodeManagers' and RM's web services,
 * and the Jersey 2 implementation it needs (relocated into Hadoop's shaded namespace) is in no jar
 * pyspark or Debian ships. A finished application whose logs are aggregated never uses that client:
 * LogsCLI asks the RM for the application over IPC and reads the aggregated files from the file
 * system. So this gives LogsCLI a client that fails every request it would make (loudly, naming
 * it) and calls LogsCLI's own runCommand with the same arguments and configuration.
 */
public final class YarnLogs {
    public static void main(String[] args) throws Exception {
        LogsCLI cli = new LogsCLI();
        cli.setConf(new YarnConfiguration());
        Object client = Proxy.newProxyInstance(Client.class.getClassLoader(), new Class<?>[] {Client.class},
            (proxy, method, margs) -> {
                switch (method.getName()) {
                    case "register": return proxy;
                    case "close": return null;
                    case "hashCode": return System.identityHashCode(proxy);
                    case "equals": return proxy == margs[0];
                    case "toString": return "no web service client";
                    default: throw new UnsupportedOperationException("YarnLogs has no web service client: " + method);
                }
            });
        Field field = LogsCLI.class.getDeclaredField("webServiceClient");
        field.setAccessible(true);
        field.set(cli, client);
        Method runCommand = LogsCLI.class.getDeclaredMethod("runCommand", String[].class);
        runCommand.setAccessible(true);
        int code;
        try {
            code = (Integer) runCommand.invoke(cli, (Object) args);
        } catch (InvocationTargetException e) {
            throw (Exception) e.getCause();
        }
        System.out.flush();
        System.exit(code);
    }
}
