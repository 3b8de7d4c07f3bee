// A command-line driver around Hadoop's own YarnClient, so tests can drive the REAL Java
// client against Cortex RM instead of imitating it.
//
// Usage: java -cp <conf dir>:<pyspark jars>:<classes> YarnClientDriver <subcommand> [args]
//
// The client is built exactly as Hadoop tools build it: YarnClient.createYarnClient(),
// init(new YarnConfiguration()), start(). YarnConfiguration reads core-site.xml and
// yarn-site.xml from the classpath, so the RM addresses and every retry setting come from
// the conf dir the test puts first on the classpath; nothing is hard-coded here.
//
// Output contract (one line of JSON on stdout, always a JSON object):
//   exit 0  the subcommand's result, e.g. {"applicationId":"application_1_0001"}
//   exit 3  the client threw: {"exception":"<fully qualified class>","message":"...",
//           "causes":["<class>: <message>", ...]}
//   exit 2  the command line was wrong: {"exception":"usage","message":"..."}
// A record the client returned as null (the server left the field unset) prints as {}.
// Library logging must go to stderr (the Python helper passes a log4j2 configuration);
// as a second guard, System.out is redirected to stderr before any Hadoop class loads and
// only the result line is written to the real stdout.

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import org.apache.hadoop.yarn.api.protocolrecords.ApplicationsRequestScope;
import org.apache.hadoop.yarn.api.protocolrecords.GetApplicationsRequest;
import org.apache.hadoop.yarn.api.protocolrecords.GetNewApplicationResponse;
import org.apache.hadoop.yarn.api.records.ApplicationAttemptId;
import org.apache.hadoop.yarn.api.records.ApplicationAttemptReport;
import org.apache.hadoop.yarn.api.records.ApplicationId;
import org.apache.hadoop.yarn.api.records.ApplicationReport;
import org.apache.hadoop.yarn.api.records.ApplicationResourceUsageReport;
import org.apache.hadoop.yarn.api.records.ApplicationSubmissionContext;
import org.apache.hadoop.yarn.api.records.ContainerId;
import org.apache.hadoop.yarn.api.records.ContainerLaunchContext;
import org.apache.hadoop.yarn.api.records.ContainerReport;
import org.apache.hadoop.yarn.api.records.NodeId;
import org.apache.hadoop.yarn.api.records.NodeLabel;
import org.apache.hadoop.yarn.api.records.NodeReport;
import org.apache.hadoop.yarn.api.records.NodeState;
import org.apache.hadoop.yarn.api.records.Priority;
import org.apache.hadoop.yarn.api.records.QueueACL;
import org.apache.hadoop.yarn.api.records.QueueInfo;
import org.apache.hadoop.yarn.api.records.QueueStatistics;
import org.apache.hadoop.yarn.api.records.QueueUserACLInfo;
import org.apache.hadoop.yarn.api.records.Resource;
import org.apache.hadoop.yarn.api.records.YarnApplicationState;
import org.apache.hadoop.yarn.api.records.YarnClusterMetrics;
import org.apache.hadoop.yarn.client.api.YarnClient;
import org.apache.hadoop.yarn.client.api.YarnClientApplication;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.util.Records;

public final class YarnClientDriver {

    static final int EXIT_OK = 0;
    static final int EXIT_USAGE = 2;
    static final int EXIT_CLIENT_EXCEPTION = 3;

    static final String USAGE = String.join("\n",
        "usage: YarnClientDriver <subcommand> [args]",
        "  new-app",
        "  submit <name> <queue> [--type T] [--tags a,b] [--priority N] [--am-command CMD] [--am-memory MB]",
        "  report <appId>",
        "  list [--types A,B] [--states S1,S2] [--queues q] [--users u] [--tags t] [--limit N]",
        "  kill <appId> [--diagnostics TEXT]",
        "  attempts <appId> | attempt <attemptId>",
        "  containers <attemptId> | container <containerId>",
        "  metrics",
        "  nodes [--states RUNNING,LOST,...]",
        "  queues | queue <name> | child-queues <parent> | acls",
        "  labels",
        "  move <appId> <queue> | priority <appId> <N> | fail-attempt <attemptId>");

    /** The command line was wrong; reported with exit status 2, never confused with a client error. */
    static final class UsageError extends RuntimeException {
        private static final long serialVersionUID = 1L;

        UsageError(String message) {
            super(message);
        }
    }

    private YarnClientDriver() {
    }

    public static void main(String[] argv) {
        PrintStream stdout = System.out;
        System.setOut(System.err);
        String line;
        int status;
        try {
            line = Json.write(run(argv));
            status = EXIT_OK;
        } catch (UsageError e) {
            line = Json.write(obj("exception", "usage", "message", e.getMessage() + "\n" + USAGE));
            status = EXIT_USAGE;
        } catch (Throwable t) {
            t.printStackTrace(System.err);
            line = Json.write(describeException(t));
            status = EXIT_CLIENT_EXCEPTION;
        }
        stdout.println(line);
        stdout.flush();
        System.exit(status);
    }

    /** Parse the command line, start a YarnClient, run one subcommand, stop the client. */
    static Map<String, Object> run(String[] argv) throws Exception {
        if (argv.length == 0) {
            throw new UsageError("no subcommand");
        }
        String subcommand = argv[0];
        Args args = new Args(Arrays.copyOfRange(argv, 1, argv.length));
        if (!SUBCOMMANDS.contains(subcommand)) {
            throw new UsageError("unknown subcommand " + subcommand);
        }
        YarnClient client = YarnClient.createYarnClient();
        client.init(new YarnConfiguration());
        client.start();
        try {
            return dispatch(client, subcommand, args);
        } finally {
            try {
                client.stop();
            } catch (RuntimeException e) {
                e.printStackTrace(System.err);
            }
        }
    }

    static final Set<String> SUBCOMMANDS = new LinkedHashSet<>(Arrays.asList(
        "new-app", "submit", "report", "list", "kill", "attempts", "attempt", "containers",
        "container", "metrics", "nodes", "queues", "queue", "child-queues", "acls", "labels",
        "move", "priority", "fail-attempt", "poll"));

    static Map<String, Object> dispatch(YarnClient client, String subcommand, Args args) throws Exception {
        switch (subcommand) {
            case "new-app": return newApp(client, args);
            case "submit": return submit(client, args);
            case "report": return report(client, args);
            case "list": return list(client, args);
            case "kill": return kill(client, args);
            case "attempts": return attempts(client, args);
            case "attempt": return attempt(client, args);
            case "containers": return containers(client, args);
            case "container": return container(client, args);
            case "metrics": return metrics(client, args);
            case "nodes": return nodes(client, args);
            case "queues": return queues(client, args);
            case "queue": return queue(client, args);
            case "child-queues": return childQueues(client, args);
            case "acls": return acls(client, args);
            case "labels": return labels(client, args);
            case "move": return move(client, args);
            case "priority": return priority(client, args);
            case "fail-attempt": return failAttempt(client, args);
            case "poll": return poll(client, args);
            default: throw new UsageError("unknown subcommand " + subcommand);
        }
    }

    // ---------------------------------------------------------------- subcommands

    /** createApplication() → getNewApplication on the wire. */
    static Map<String, Object> newApp(YarnClient client, Args args) throws Exception {
        args.expect();
        GetNewApplicationResponse response = client.createApplication().getNewApplicationResponse();
        return obj(
            "applicationId", str(response.getApplicationId()),
            "maximumCapability", resource(response.getMaximumResourceCapability()));
    }

    /** createApplication + submitApplication with a trivial AM (by default "sleep 1", 1024 MB, 1 vcore);
     *  the client polls the report until the application leaves NEW/NEW_SAVING/SUBMITTED.
     *  Note: the client lower-cases application tags before they go on the wire. */
    static Map<String, Object> submit(YarnClient client, Args args) throws Exception {
        String type = args.option("type");
        String tags = args.option("tags");
        Integer priority = args.intOption("priority");
        String amCommand = args.option("am-command");
        Integer amMemory = args.intOption("am-memory");
        List<String> positional = args.expect("name", "queue");

        YarnClientApplication app = client.createApplication();
        ApplicationSubmissionContext context = app.getApplicationSubmissionContext();
        context.setApplicationName(positional.get(0));
        context.setQueue(positional.get(1));
        ContainerLaunchContext am = Records.newRecord(ContainerLaunchContext.class);
        am.setCommands(new ArrayList<>(List.of(amCommand != null ? amCommand : "sleep 1")));
        context.setAMContainerSpec(am);
        context.setResource(Resource.newInstance(amMemory != null ? amMemory : 1024, 1));
        if (type != null) {
            context.setApplicationType(type);
        }
        if (tags != null) {
            context.setApplicationTags(new LinkedHashSet<>(splitList(tags)));
        }
        if (priority != null) {
            context.setPriority(Priority.newInstance(priority));
        }
        ApplicationId id = client.submitApplication(context);
        return obj("applicationId", str(id));
    }

    static Map<String, Object> report(YarnClient client, Args args) throws Exception {
        ApplicationId id = ApplicationId.fromString(args.expect("appId").get(0));
        return applicationReport(client.getApplicationReport(id));
    }

    /** getApplications(GetApplicationsRequest) with scope ALL: every filter given here is
     *  put on the wire as is (the convenience overloads drop some of them). */
    static Map<String, Object> list(YarnClient client, Args args) throws Exception {
        GetApplicationsRequest request = GetApplicationsRequest.newInstance(ApplicationsRequestScope.ALL);
        String types = args.option("types");
        if (types != null) {
            request.setApplicationTypes(new LinkedHashSet<>(splitList(types)));
        }
        String states = args.option("states");
        if (states != null) {
            EnumSet<YarnApplicationState> set = EnumSet.noneOf(YarnApplicationState.class);
            for (String s : splitList(states)) {
                set.add(enumValue(YarnApplicationState.class, s));
            }
            request.setApplicationStates(set);
        }
        String queues = args.option("queues");
        if (queues != null) {
            request.setQueues(new LinkedHashSet<>(splitList(queues)));
        }
        String users = args.option("users");
        if (users != null) {
            request.setUsers(new LinkedHashSet<>(splitList(users)));
        }
        String tags = args.option("tags");
        if (tags != null) {
            request.setApplicationTags(new LinkedHashSet<>(splitList(tags)));
        }
        Long limit = args.longOption("limit");
        if (limit != null) {
            request.setLimit(limit);
        }
        args.expect();
        List<Object> apps = new ArrayList<>();
        for (ApplicationReport r : client.getApplications(request)) {
            apps.add(obj(
                "id", str(r.getApplicationId()),
                "state", str(r.getYarnApplicationState()),
                "queue", r.getQueue(),
                "user", r.getUser(),
                "type", r.getApplicationType(),
                "name", r.getName(),
                "tags", sorted(r.getApplicationTags())));
        }
        return obj("applications", apps);
    }

    /** killApplication loops until the RM says is_kill_completed; then one report. */
    static Map<String, Object> kill(YarnClient client, Args args) throws Exception {
        String diagnostics = args.option("diagnostics");
        ApplicationId id = ApplicationId.fromString(args.expect("appId").get(0));
        if (diagnostics == null) {
            client.killApplication(id);
        } else {
            client.killApplication(id, diagnostics);
        }
        ApplicationReport r = client.getApplicationReport(id);
        return obj(
            "applicationId", str(id),
            "state", r == null ? null : str(r.getYarnApplicationState()),
            "finalStatus", r == null ? null : str(r.getFinalApplicationStatus()));
    }

    static Map<String, Object> attempts(YarnClient client, Args args) throws Exception {
        ApplicationId id = ApplicationId.fromString(args.expect("appId").get(0));
        List<Object> out = new ArrayList<>();
        for (ApplicationAttemptReport r : client.getApplicationAttempts(id)) {
            out.add(attemptReport(r));
        }
        return obj("attempts", out);
    }

    static Map<String, Object> attempt(YarnClient client, Args args) throws Exception {
        ApplicationAttemptId id = ApplicationAttemptId.fromString(args.expect("attemptId").get(0));
        return attemptReport(client.getApplicationAttemptReport(id));
    }

    static Map<String, Object> containers(YarnClient client, Args args) throws Exception {
        ApplicationAttemptId id = ApplicationAttemptId.fromString(args.expect("attemptId").get(0));
        List<Object> out = new ArrayList<>();
        for (ContainerReport r : client.getContainers(id)) {
            out.add(containerReport(r));
        }
        return obj("containers", out);
    }

    static Map<String, Object> container(YarnClient client, Args args) throws Exception {
        ContainerId id = ContainerId.fromString(args.expect("containerId").get(0));
        return containerReport(client.getContainerReport(id));
    }

    static Map<String, Object> metrics(YarnClient client, Args args) throws Exception {
        args.expect();
        YarnClusterMetrics m = client.getYarnClusterMetrics();
        if (m == null) {
            return obj();
        }
        return obj(
            "numNodeManagers", m.getNumNodeManagers(),
            "numActiveNodeManagers", m.getNumActiveNodeManagers(),
            "numDecommissioningNodeManagers", m.getNumDecommissioningNodeManagers(),
            "numDecommissionedNodeManagers", m.getNumDecommissionedNodeManagers(),
            "numLostNodeManagers", m.getNumLostNodeManagers(),
            "numUnhealthyNodeManagers", m.getNumUnhealthyNodeManagers(),
            "numRebootedNodeManagers", m.getNumRebootedNodeManagers(),
            "numShutdownNodeManagers", m.getNumShutdownNodeManagers());
    }

    /** An honest client under load (bench/soak.py): getApplications and getYarnClusterMetrics,
     *  one after the other every --interval-ms, until the file --until exists; counts the calls
     *  that failed (the client's own retries included) and the latencies of those that did not. */
    static Map<String, Object> poll(YarnClient client, Args args) throws Exception {
        java.io.File until = new java.io.File(args.option("until"));
        long intervalMs = Long.parseLong(args.option("interval-ms"));
        args.expect();
        List<Long> latencies = new ArrayList<>();
        List<String> errors = new ArrayList<>();
        int failed = 0;
        while (!until.exists()) {
            long start = System.nanoTime();
            try {
                client.getApplications();
                client.getYarnClusterMetrics();
                latencies.add((System.nanoTime() - start) / 1000L);
            } catch (Exception e) {
                failed++;
                if (errors.size() < 5) {
                    errors.add(e.getClass().getName() + ": " + e.getMessage());
                }
            }
            Thread.sleep(intervalMs);
        }
        latencies.sort(null);
        int n = latencies.size();
        return obj(
            "calls", n + failed, "failed", failed, "errors", errors,
            "p50_us", n == 0 ? -1 : latencies.get(n / 2),
            "p99_us", n == 0 ? -1 : latencies.get(Math.min(n - 1, (int) (n * 0.99))),
            "max_us", n == 0 ? -1 : latencies.get(n - 1));
    }

    /** getNodeReports(states...); with no --states the client asks for every NodeState. */
    static Map<String, Object> nodes(YarnClient client, Args args) throws Exception {
        String states = args.option("states");
        args.expect();
        List<NodeState> wanted = new ArrayList<>();
        if (states != null) {
            for (String s : splitList(states)) {
                wanted.add(enumValue(NodeState.class, s));
            }
        }
        List<Object> out = new ArrayList<>();
        for (NodeReport r : client.getNodeReports(wanted.toArray(new NodeState[0]))) {
            out.add(obj(
                "nodeId", str(r.getNodeId()),
                "httpAddress", r.getHttpAddress(),
                "rackName", r.getRackName(),
                "state", str(r.getNodeState()),
                "capability", resource(r.getCapability()),
                "used", resource(r.getUsed()),
                "numContainers", r.getNumContainers(),
                "healthReport", r.getHealthReport(),
                "lastHealthReportTime", r.getLastHealthReportTime(),
                "nodeLabels", sorted(r.getNodeLabels())));
        }
        return obj("nodes", out);
    }

    /** getAllQueues() (every queue below root, flattened by the client; root itself is not in
     *  the list) and getRootQueueInfos() (root's children). Each sends getQueueInfo("root",
     *  includeApplications=false, includeChildQueues=true, recursive=true). */
    static Map<String, Object> queues(YarnClient client, Args args) throws Exception {
        args.expect();
        List<Object> all = new ArrayList<>();
        for (QueueInfo q : client.getAllQueues()) {
            all.add(queueInfo(q));
        }
        List<Object> roots = new ArrayList<>();
        for (QueueInfo q : client.getRootQueueInfos()) {
            roots.add(queueInfo(q));
        }
        return obj("queues", all, "rootQueues", roots);
    }

    /** getQueueInfo(name) sends includeApplications=true, includeChildQueues=false, recursive=false. */
    static Map<String, Object> queue(YarnClient client, Args args) throws Exception {
        String name = args.expect("name").get(0);
        return queueInfo(client.getQueueInfo(name));
    }

    /** getChildQueueInfos(parent) sends includeChildQueues=true, recursive=false. */
    static Map<String, Object> childQueues(YarnClient client, Args args) throws Exception {
        String parent = args.expect("parent").get(0);
        List<Object> out = new ArrayList<>();
        for (QueueInfo q : client.getChildQueueInfos(parent)) {
            out.add(queueInfo(q));
        }
        return obj("queues", out);
    }

    static Map<String, Object> acls(YarnClient client, Args args) throws Exception {
        args.expect();
        List<Object> out = new ArrayList<>();
        for (QueueUserACLInfo info : client.getQueueAclsInfo()) {
            List<Object> acls = new ArrayList<>();
            if (info.getUserAcls() != null) {
                for (QueueACL acl : info.getUserAcls()) {
                    acls.add(str(acl));
                }
            }
            out.add(obj("queueName", info.getQueueName(), "userAcls", acls));
        }
        return obj("queueAcls", out);
    }

    static Map<String, Object> labels(YarnClient client, Args args) throws Exception {
        args.expect();
        List<Object> clusterLabels = new ArrayList<>();
        for (NodeLabel label : client.getClusterNodeLabels()) {
            clusterLabels.add(obj("name", label.getName(), "exclusive", label.isExclusive()));
        }
        Map<String, Object> nodeToLabels = new TreeMap<>();
        for (Map.Entry<NodeId, Set<String>> e : client.getNodeToLabels().entrySet()) {
            nodeToLabels.put(str(e.getKey()), sorted(e.getValue()));
        }
        Map<String, Object> labelsToNodes = new TreeMap<>();
        for (Map.Entry<String, Set<NodeId>> e : client.getLabelsToNodes().entrySet()) {
            List<String> nodes = new ArrayList<>();
            for (NodeId n : e.getValue()) {
                nodes.add(str(n));
            }
            labelsToNodes.put(e.getKey(), sorted(nodes));
        }
        return obj(
            "clusterNodeLabels", clusterLabels,
            "nodeToLabels", nodeToLabels,
            "labelsToNodes", labelsToNodes);
    }

    static Map<String, Object> move(YarnClient client, Args args) throws Exception {
        List<String> positional = args.expect("appId", "queue");
        ApplicationId id = ApplicationId.fromString(positional.get(0));
        client.moveApplicationAcrossQueues(id, positional.get(1));
        return obj("applicationId", str(id), "queue", positional.get(1));
    }

    static Map<String, Object> priority(YarnClient client, Args args) throws Exception {
        List<String> positional = args.expect("appId", "N");
        ApplicationId id = ApplicationId.fromString(positional.get(0));
        Priority updated = client.updateApplicationPriority(id, Priority.newInstance(parseInt("N", positional.get(1))));
        return obj("applicationId", str(id), "priority", updated == null ? null : updated.getPriority());
    }

    static Map<String, Object> failAttempt(YarnClient client, Args args) throws Exception {
        ApplicationAttemptId id = ApplicationAttemptId.fromString(args.expect("attemptId").get(0));
        client.failApplicationAttempt(id);
        return obj("applicationAttemptId", str(id));
    }

    // ---------------------------------------------------------------- records → JSON values

    static Map<String, Object> applicationReport(ApplicationReport r) {
        if (r == null) {
            return obj();
        }
        return obj(
            "id", str(r.getApplicationId()),
            "user", r.getUser(),
            "queue", r.getQueue(),
            "name", r.getName(),
            "host", r.getHost(),
            "rpcPort", r.getRpcPort(),
            "state", str(r.getYarnApplicationState()),
            "finalStatus", str(r.getFinalApplicationStatus()),
            "diagnostics", r.getDiagnostics(),
            "trackingUrl", r.getTrackingUrl(),
            "originalTrackingUrl", r.getOriginalTrackingUrl(),
            "startTime", r.getStartTime(),
            "launchTime", r.getLaunchTime(),
            "submitTime", r.getSubmitTime(),
            "finishTime", r.getFinishTime(),
            "progress", r.getProgress(),
            "applicationType", r.getApplicationType(),
            "tags", sorted(r.getApplicationTags()),
            "priority", r.getPriority() == null ? null : r.getPriority().getPriority(),
            "currentApplicationAttemptId", str(r.getCurrentApplicationAttemptId()),
            "unmanagedApp", r.isUnmanagedApp(),
            "hasClientToAMToken", r.getClientToAMToken() != null,
            "hasAMRMToken", r.getAMRMToken() != null,
            "appNodeLabelExpression", r.getAppNodeLabelExpression(),
            "amNodeLabelExpression", r.getAmNodeLabelExpression(),
            "resourceUsage", resourceUsage(r.getApplicationResourceUsageReport()));
    }

    static Map<String, Object> resourceUsage(ApplicationResourceUsageReport u) {
        if (u == null) {
            return null;
        }
        return obj(
            "numUsedContainers", u.getNumUsedContainers(),
            "numReservedContainers", u.getNumReservedContainers(),
            "usedResources", resource(u.getUsedResources()),
            "reservedResources", resource(u.getReservedResources()),
            "neededResources", resource(u.getNeededResources()),
            "memorySeconds", u.getMemorySeconds(),
            "vcoreSeconds", u.getVcoreSeconds(),
            "queueUsagePercentage", u.getQueueUsagePercentage(),
            "clusterUsagePercentage", u.getClusterUsagePercentage());
    }

    static Map<String, Object> attemptReport(ApplicationAttemptReport r) {
        if (r == null) {
            return obj();
        }
        return obj(
            "id", str(r.getApplicationAttemptId()),
            "state", str(r.getYarnApplicationAttemptState()),
            "host", r.getHost(),
            "rpcPort", r.getRpcPort(),
            "trackingUrl", r.getTrackingUrl(),
            "originalTrackingUrl", r.getOriginalTrackingUrl(),
            "diagnostics", r.getDiagnostics(),
            "amContainerId", str(r.getAMContainerId()),
            "startTime", r.getStartTime(),
            "finishTime", r.getFinishTime());
    }

    static Map<String, Object> containerReport(ContainerReport r) {
        if (r == null) {
            return obj();
        }
        return obj(
            "id", str(r.getContainerId()),
            "state", str(r.getContainerState()),
            "allocatedResource", resource(r.getAllocatedResource()),
            "assignedNode", str(r.getAssignedNode()),
            "priority", r.getPriority() == null ? null : r.getPriority().getPriority(),
            "creationTime", r.getCreationTime(),
            "finishTime", r.getFinishTime(),
            "diagnostics", r.getDiagnosticsInfo(),
            "logUrl", r.getLogUrl(),
            "exitStatus", r.getContainerExitStatus(),
            "nodeHttpAddress", r.getNodeHttpAddress(),
            "executionType", str(r.getExecutionType()));
    }

    /** A QueueInfo with its child queues (recursively) and its applications. */
    static Map<String, Object> queueInfo(QueueInfo q) {
        if (q == null) {
            return obj();
        }
        List<Object> children = new ArrayList<>();
        if (q.getChildQueues() != null) {
            for (QueueInfo child : q.getChildQueues()) {
                children.add(queueInfo(child));
            }
        }
        List<Object> apps = new ArrayList<>();
        if (q.getApplications() != null) {
            for (ApplicationReport r : q.getApplications()) {
                apps.add(applicationReport(r));
            }
        }
        return obj(
            "queueName", q.getQueueName(),
            "queuePath", q.getQueuePath(),
            "capacity", q.getCapacity(),
            "maximumCapacity", q.getMaximumCapacity(),
            "currentCapacity", q.getCurrentCapacity(),
            "weight", q.getWeight(),
            "queueState", str(q.getQueueState()),
            "schedulerType", q.getSchedulerType(),
            "accessibleNodeLabels", sorted(q.getAccessibleNodeLabels()),
            "defaultNodeLabelExpression", q.getDefaultNodeLabelExpression(),
            "queueStatistics", queueStatistics(q.getQueueStatistics()),
            "childQueues", children,
            "applications", apps);
    }

    static Map<String, Object> queueStatistics(QueueStatistics s) {
        if (s == null) {
            return null;
        }
        return obj(
            "numAppsSubmitted", s.getNumAppsSubmitted(),
            "numAppsRunning", s.getNumAppsRunning(),
            "numAppsPending", s.getNumAppsPending(),
            "numAppsCompleted", s.getNumAppsCompleted(),
            "numAppsKilled", s.getNumAppsKilled(),
            "numAppsFailed", s.getNumAppsFailed(),
            "numActiveUsers", s.getNumActiveUsers(),
            "availableMemoryMB", s.getAvailableMemoryMB(),
            "allocatedMemoryMB", s.getAllocatedMemoryMB(),
            "availableVCores", s.getAvailableVCores(),
            "allocatedVCores", s.getAllocatedVCores(),
            "allocatedContainers", s.getAllocatedContainers());
    }

    static Map<String, Object> resource(Resource r) {
        if (r == null) {
            return null;
        }
        return obj("memory", r.getMemorySize(), "vcores", r.getVirtualCores());
    }

    /** {"exception", "message", "causes"} for a throwable, with its cause chain. */
    static Map<String, Object> describeException(Throwable t) {
        List<Object> causes = new ArrayList<>();
        for (Throwable c = t.getCause(); c != null && c != t && causes.size() < 10; c = c.getCause()) {
            causes.add(c.getClass().getName() + ": " + c.getMessage());
        }
        return obj(
            "exception", t.getClass().getName(),
            "message", t.getMessage() == null ? "" : t.getMessage(),
            "causes", causes);
    }

    // ---------------------------------------------------------------- small helpers

    static Map<String, Object> obj(Object... keysAndValues) {
        Map<String, Object> map = new LinkedHashMap<>();
        for (int i = 0; i < keysAndValues.length; i += 2) {
            map.put((String) keysAndValues[i], keysAndValues[i + 1]);
        }
        return map;
    }

    static String str(Object o) {
        return o == null ? null : o.toString();
    }

    static List<String> sorted(Collection<String> values) {
        return values == null ? new ArrayList<>() : new ArrayList<>(new TreeSet<>(values));
    }

    static List<String> splitList(String csv) {
        List<String> out = new ArrayList<>();
        for (String part : csv.split(",")) {
            if (!part.trim().isEmpty()) {
                out.add(part.trim());
            }
        }
        return out;
    }

    static <E extends Enum<E>> E enumValue(Class<E> type, String name) {
        try {
            return Enum.valueOf(type, name.trim().toUpperCase());
        } catch (IllegalArgumentException e) {
            throw new UsageError("not a " + type.getSimpleName() + ": " + name
                + " (one of " + Arrays.toString(type.getEnumConstants()) + ")");
        }
    }

    static int parseInt(String what, String value) {
        try {
            return Integer.parseInt(value);
        } catch (NumberFormatException e) {
            throw new UsageError(what + " must be an integer, not " + value);
        }
    }

    /** Positional arguments and {@code --name value} options of one subcommand. */
    static final class Args {
        private final List<String> positional = new ArrayList<>();
        private final Map<String, String> options = new HashMap<>();

        Args(String[] argv) {
            for (int i = 0; i < argv.length; i++) {
                if (argv[i].startsWith("--")) {
                    if (i + 1 >= argv.length) {
                        throw new UsageError("option " + argv[i] + " needs a value");
                    }
                    options.put(argv[i].substring(2), argv[++i]);
                } else {
                    positional.add(argv[i]);
                }
            }
        }

        /** Check that every option was read and that the positional arguments are exactly
         *  {@code names}; return them. Subcommands read their options first, then call this. */
        List<String> expect(String... names) {
            if (!options.isEmpty()) {
                throw new UsageError("unknown options " + options.keySet());
            }
            if (positional.size() != names.length) {
                throw new UsageError("expected arguments " + Arrays.toString(names) + ", got " + positional);
            }
            return positional;
        }

        String option(String name) {
            return options.remove(name);
        }

        Integer intOption(String name) {
            String value = option(name);
            return value == null ? null : parseInt("--" + name, value);
        }

        Long longOption(String name) {
            String value = option(name);
            try {
                return value == null ? null : Long.valueOf(value);
            } catch (NumberFormatException e) {
                throw new UsageError("--" + name + " must be an integer, not " + value);
            }
        }
    }

    /** A minimal JSON writer for maps, lists, strings, numbers, booleans and null; output is ASCII. */
    static final class Json {
        private Json() {
        }

        static String write(Object value) {
            StringBuilder out = new StringBuilder();
            append(out, value);
            return out.toString();
        }

        private static void append(StringBuilder out, Object value) {
            if (value == null) {
                out.append("null");
            } else if (value instanceof String) {
                appendString(out, (String) value);
            } else if (value instanceof Boolean || value instanceof Integer || value instanceof Long) {
                out.append(value);
            } else if (value instanceof Float || value instanceof Double) {
                double d = ((Number) value).doubleValue();
                // JSON has no NaN or Infinity; Float.toString keeps 0.1f as "0.1"
                out.append(Double.isFinite(d) ? value.toString() : "null");
            } else if (value instanceof Map) {
                out.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
                    if (!first) {
                        out.append(',');
                    }
                    first = false;
                    appendString(out, String.valueOf(e.getKey()));
                    out.append(':');
                    append(out, e.getValue());
                }
                out.append('}');
            } else if (value instanceof Collection) {
                out.append('[');
                boolean first = true;
                for (Object item : (Collection<?>) value) {
                    if (!first) {
                        out.append(',');
                    }
                    first = false;
                    append(out, item);
                }
                out.append(']');
            } else {
                appendString(out, value.toString());
            }
        }

        private static void appendString(StringBuilder out, String s) {
            out.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"': out.append("\\\""); break;
                    case '\\': out.append("\\\\"); break;
                    case '\n': out.append("\\n"); break;
                    case '\r': out.append("\\r"); break;
                    case '\t': out.append("\\t"); break;
                    default:
                        if (c < 0x20 || c > 0x7e) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                }
            }
            out.append('"');
        }
    }
}
