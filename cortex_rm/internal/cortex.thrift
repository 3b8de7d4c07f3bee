/*
 * Cortex RM's internal node-to-node RPC (our IDL; not the Hadoop wire).
 *
 * Regenerate the Python modules in gen/ after editing this file:
 *     python -m cortex_rm.internal.generate
 * (Debian's `thrift` compiler, `thrift --gen py:twisted`; the test suite checks
 * that the committed modules are current.)
 *
 * Every connection is mutual TLS: the peer's identity is the certificate it
 * presented, so no struct below carries a key, a certificate or a fingerprint.
 */

namespace py cortex_rm.internal.gen

// ------------------------------------------------------------------ NodeTracker
//
// YARN's ResourceTracker: each NodeManager registers with the ResourceManager,
// then heartbeats every `heartbeat_interval_ms` (the RM's answer decides it).
// The RM answers RESYNC when it does not know the node (it restarted, or it
// declared the node LOST), and the node registers again.

/** A NodeManager's RPC address: YARN's NodeId, `host:port`. */
struct NodeAddress {
  1: required string host,
  2: required i32 port,
}

/** What a node offers to containers (YARN's Resource: memory and vcores). */
struct Capacity {
  1: required i64 memory_mb,
  2: required i32 vcores,
}

/** registerNode's argument (YARN's RegisterNodeManagerRequest). */
struct NodeRegistration {
  1: required NodeAddress node_id,
  2: required string http_address,       // the NM's web address, host:port
  3: required string rack,               // e.g. "/default-rack"
  4: required Capacity capacity,
  5: required i32 heartbeat_interval_ms, // the interval the node asks for; the RM may shorten it
  6: optional string version,            // the node's Cortex RM version, for logs
}

/**
 * A secret that signs tokens (YARN's MasterKey): the RM signs every
 * ContainerToken with HMAC-SHA1 under the current container-token key, and
 * a NodeManager needs the same key to check the tokens AMs present in
 * startContainers.  It travels only inside this mutual-TLS channel.
 */
struct MasterKey {
  1: required i32 key_id,
  2: required binary secret,
}

/** registerNode's answer (YARN's RegisterNodeManagerResponse). */
struct RegistrationResponse {
  1: required i32 heartbeat_interval_ms, // report every this many ms
  2: required i64 rm_identifier,         // the RM's start time (ms): changes when the RM restarts
  3: optional string diagnostics,
  4: optional MasterKey container_token_master_key, // absent when the RM runs no scheduler yet
}

/** YARN's ContainerState. */
enum ContainerState {
  NEW = 1,
  RUNNING = 2,
  COMPLETE = 3,
}

/** One container as the node sees it (YARN's ContainerStatus). */
struct ContainerStatus {
  1: required string container_id,     // YARN's string form, container_..._000001
  2: required ContainerState state,
  3: required i32 exit_status,          // YARN's ContainerExitStatus; -1000 while running
  4: optional string diagnostics,
}

/** nodeHeartbeat's argument (YARN's NodeHeartbeatRequest + NodeStatus). */
struct NodeStatus {
  1: required NodeAddress node_id,
  2: required i32 response_id,          // the response_id of the last answer received
  3: required bool healthy,
  4: required string health_report,
  5: required list<ContainerStatus> containers,
}

/** What the RM wants the node to do next (YARN's NodeAction). */
enum NodeAction {
  NORMAL = 0,   // go on heartbeating
  RESYNC = 1,   // register again: the RM does not know this node (any more)
  SHUTDOWN = 2, // stop reporting
}

/** nodeHeartbeat's answer (YARN's NodeHeartbeatResponse). */
struct HeartbeatResponse {
  1: required i32 response_id,
  2: required NodeAction action,
  3: required i32 next_heartbeat_interval_ms,
  4: required list<string> containers_to_cleanup,
  5: optional string diagnostics,
  // applications that finished: the node kills what is left of their containers and
  // deletes their work dirs (YARN's applicationsToCleanup); application ids
  6: optional list<string> applications_to_cleanup,
}

/**
 * The RM will not accept this node's request: its certificate is not the one
 * that registered the NodeId, or the request is invalid (empty host, no
 * capacity, ...).  Retrying the same request from the same node does not help.
 */
exception NodeRefused {
  1: required string message,
}

service NodeTracker {
  RegistrationResponse registerNode(1: NodeRegistration registration)
      throws (1: NodeRefused refused),

  HeartbeatResponse nodeHeartbeat(1: NodeStatus status)
      throws (1: NodeRefused refused),
}
