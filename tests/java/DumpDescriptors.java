// Writes the protobuf descriptors compiled into hadoop-client-api as one binary
// FileDescriptorSet, so Python tests can compare our .proto files against them.
//
// Usage: java DumpDescriptors <out.pb> [generated-outer-class ...]
//
// Each named class is a protoc-generated outer class (e.g.
// org.apache.hadoop.yarn.proto.YarnProtos) whose static getDescriptor() returns
// its FileDescriptor.  Hadoop shades protobuf as org.apache.hadoop.thirdparty.protobuf.
// The set holds every file reachable through imports, dependencies before
// dependents, each file once.

import java.io.FileOutputStream;
import java.io.OutputStream;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.apache.hadoop.thirdparty.protobuf.DescriptorProtos.FileDescriptorSet;
import org.apache.hadoop.thirdparty.protobuf.Descriptors.FileDescriptor;

public final class DumpDescriptors {
    // The outer classes of the files Cortex mirrors (Hadoop IPC common + YARN API).
    static final String[] DEFAULT_CLASSES = {
        "org.apache.hadoop.ipc.protobuf.RpcHeaderProtos",
        "org.apache.hadoop.ipc.protobuf.IpcConnectionContextProtos",
        "org.apache.hadoop.ipc.protobuf.ProtobufRpcEngine2Protos",
        "org.apache.hadoop.security.proto.SecurityProtos",
        "org.apache.hadoop.yarn.proto.YarnProtos",
        "org.apache.hadoop.yarn.proto.YarnServiceProtos",
        "org.apache.hadoop.yarn.proto.YarnSecurityTokenProtos",
        "org.apache.hadoop.yarn.proto.ApplicationClientProtocol",
        "org.apache.hadoop.yarn.proto.ApplicationMasterProtocol",
        "org.apache.hadoop.yarn.proto.ContainerManagementProtocol",
    };

    private DumpDescriptors() {}

    /** Adds {@code file} after all of its (transitive) dependencies, once. */
    private static void addWithDependencies(FileDescriptor file, Map<String, FileDescriptor> ordered) {
        if (ordered.containsKey(file.getName())) {
            return;
        }
        for (FileDescriptor dep : file.getDependencies()) {
            addWithDependencies(dep, ordered);
        }
        ordered.put(file.getName(), file);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: DumpDescriptors <out.pb> [generated-outer-class ...]");
            System.exit(2);
        }
        List<String> classes = args.length > 1
            ? Arrays.asList(args).subList(1, args.length)
            : Arrays.asList(DEFAULT_CLASSES);

        Map<String, FileDescriptor> ordered = new LinkedHashMap<>();
        for (String name : classes) {
            Method getDescriptor = Class.forName(name).getMethod("getDescriptor");
            addWithDependencies((FileDescriptor) getDescriptor.invoke(null), ordered);
        }

        FileDescriptorSet.Builder set = FileDescriptorSet.newBuilder();
        List<String> names = new ArrayList<>();
        for (FileDescriptor file : ordered.values()) {
            set.addFile(file.toProto());
            names.add(file.getName() + " (" + file.getPackage() + ")");
        }
        try (OutputStream out = new FileOutputStream(args[0])) {
            set.build().writeTo(out);
        }
        for (String n : names) {
            System.out.println(n);
        }
    }
}
