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

/** YARN's ContainerState. */
enum ContainerState {
  NEW = 1,
  RUNNING = 2,
  COMPLETE = 3,
}

/**
 * One container as the node sees it (YARN's ContainerStatus; with 5-7, as a registration
 * carries it, YARN's NMContainerStatus).
 */
struct ContainerStatus {
  1: required string container_id,     // YARN's string form, container_..._000001
  2: required ContainerState state,
  3: required i32 exit_status,          // YARN's ContainerExitStatus; -1000 while running
  4: optional string diagnostics,
  5: optional Capacity resource,        // what it was allocated
  6: optional i32 priority,             // the priority of the ask it satisfied
  7: optional i64 creation_time_ms,     // when the RM allocated it
}

/** registerNode's argument (YARN's RegisterNodeManagerRequest). */
struct NodeRegistration {
  1: required NodeAddress node_id,
  2: required string http_address,       // the NM's web address, host:port
  3: required string rack,               // e.g. "/default-rack"
  4: required Capacity capacity,
  5: required i32 heartbeat_interval_ms, // the interval the node asks for; the RM may shorten it
  6: optional string version,            // the node's Cortex RM version, for logs
  7: optional bool healthy,              // unset: healthy (YARN's RegisterNodeManagerRequest.nodeStatus)
  8: optional string health_report,      // what an unhealthy node waits for
  // YARN's NMContainerStatuses: the containers the node runs and those recently finished, each
  // with its resource, priority and creation time, so that a restarted RM recovers them
  9: optional list<ContainerStatus> containers,
  // the node is leaving gracefully (as NodeStatus.leave): an RM that took over, or that the node
  // registers with again (RESYNC), marks it DECOMMISSIONING at once. Absent: it is not leaving
  10: optional NodeLeave leave,
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
  // true: this RM names, in heartbeat answers (containers_to_remove), the completed containers
  // the node may forget, so the node keeps acknowledged completions until then and lists them
  // when it registers again (YARN's containersToBeRemovedFromNM).  Absent (an older RM): the
  // node forgets a completed container once acknowledged, as before.
  5: optional bool removes_completed_containers,
}

/** nodeHeartbeat's argument (YARN's NodeHeartbeatRequest + NodeStatus). */
struct NodeStatus {
  1: required NodeAddress node_id,
  2: required i32 response_id,          // the response_id of the last answer received
  3: required bool healthy,
  4: required string health_report,
  5: required list<ContainerStatus> containers,
  // the node is leaving gracefully (YARN's graceful decommission); absent: it is not
  6: optional NodeLeave leave,
  // (7-9: free)
  // the node's total resource now: its caps, which change without a restart (SIGHUP); the RM
  // resizes the node when it differs, keeping its containers. Unset: as registered
  10: optional Capacity capability,
  // false outside the node's schedule ([nodemanager] schedule): the RM places nothing new there,
  // its containers go on. Unset: true
  11: optional bool offering,
}

/** How far a node that leaves gracefully has got. */
enum NodeLeave {
  DECOMMISSIONING = 1, // no new containers here; the running ones have their grace
  DRAINED = 2,         // no container left: the RM may mark the node DECOMMISSIONED
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
  // completed containers the node may forget: their ApplicationMaster has them, or none ever
  // will (YARN's containersToBeRemovedFromNM); container ids.  An older node ignores it.
  7: optional list<string> containers_to_remove,
  // with action SHUTDOWN: the RM marked the draining node DECOMMISSIONED (it may go)
  8: optional bool decommissioned,
}

/**
 * The RM will not accept this node's request: its certificate is not the one
 * that registered the NodeId, or the request is invalid (empty host, no
 * capacity, ...).  Retrying the same request from the same node does not help.
 */
exception NodeRefused {
  1: required string message,
}


// ---- The file system's DataNode calls (fs/, yarn_api/webhdfs/): a registered node reports
// the block replicas it holds, commits the files it received, and asks where blocks are.

/** One block replica a node holds. */
struct ReportedBlock {
  1: required string block_id,   // blk_ + 32 hex digits
  2: required i64 length,
  3: required string checksum,   // hex MD5 of the block's chunk CRC32s
  4: required i64 age_ms,        // how long ago the node finished writing it
}

/** blockReport's argument: everything the node holds (full), or what changed since its last report. */
struct BlockReport {
  1: required bool full,
  2: required list<ReportedBlock> added,   // full: every replica
  3: required list<string> removed,        // ids deleted or found corrupt (empty when full)
  4: required i64 free_bytes,              // space left for blocks on the node
}

/** Copy a block from one of `sources` (web host:port of nodes that hold it). */
struct FetchOrder {
  1: required string block_id,
  2: required i64 length,
  3: required string checksum,
  4: required list<string> sources,
  5: required string token,                // a block token that lets the node read it from the sources
}

/** blockReport's answer: what to delete, what to fetch, and the key that signs file-system tokens. */
struct BlockCommands {
  1: required list<string> delete,
  2: required list<FetchOrder> fetch,
  3: required MasterKey token_key,
  4: required i32 report_interval_ms,      // report again within this many ms
  5: required bool full_report_wanted,     // the next report must be a full one (e.g. after LOST)
}

/** A block written by a write pipeline, with the nodes (NodeIds) that stored it. */
struct WrittenBlock {
  1: required string block_id,
  2: required i64 length,
  3: required string checksum,
  4: required list<NodeAddress> holders,
}

/** commitWrite's argument: the write ticket the client was redirected with, and the blocks in file order. */
struct WriteCommit {
  1: required string ticket,
  2: required list<WrittenBlock> blocks,
}

/** A block of a file being read: where it starts in the file, who holds it, and a token to read it. */
struct LocatedBlock {
  1: required string block_id,
  2: required i64 length,
  3: required string checksum,
  4: required i64 offset,                  // of the block's first byte in the file
  5: required list<string> sources,        // web host:port of live holders, nearest first
  6: required string token,
}

/** locateBlocks' answer: the blocks covering the asked range, in order. */
struct BlockLocations {
  1: required i64 file_length,
  2: required list<LocatedBlock> blocks,
}

/**
 * openForLocalization's answer: the file a container's resource names, as the NameNode has
 * it now (the node checks length and time against the resource), and a read ticket for it.
 */
struct LocalizationSource {
  1: required i64 length,
  2: required i64 modification_time,      // ms since the epoch
  3: required string ticket,              // an OPEN ticket: read the blocks with locateBlocks
}

/**
 * openForAggregation's answer: where a node writes an application's aggregated logs (the
 * file its NodeId names under the application's remote log dir), and the CREATE ticket to
 * write it with (this node first in its pipeline; commit with commitWrite).
 */
struct AggregationTarget {
  1: required string path,
  2: required string ticket,
  3: required string owner,               // the application's user: the file's APPLICATION_OWNER
}

/**
 * openRuntimeImage's answer: the root file system every container of the cluster runs in, as
 * the RM's configuration names it (`sha256` of its archive; empty when it names none), and,
 * when the archive is in the file system, how to read it (a node checks the hash of what it
 * read against `sha256` before it unpacks anything).
 */
struct RuntimeImage {
  1: required string sha256,
  2: optional LocalizationSource source,
}

/**
 * applicationNetwork's answer.  `client_host`: the host the application was submitted from,
 * as the RM saw the client's connection ("" when unknown): a client-mode driver runs there,
 * and the node lets the application's containers reach the driver endpoints their commands
 * name only on that host.  `port_slot`: the application's slot of source ports (0..127; every
 * node rewrites its containers' connections to other containers into the slot's ports, and
 * a container accepts from other machines only its own application's), absent when it holds
 * none (then its containers are reachable only from their own node).
 */
struct ApplicationNetwork {
  1: required string client_host,
  2: optional i32 port_slot,
}

/**
 * Where one attestation batch landed in the ledger: its index, and its inclusion proof
 * (RFC 6962 audit path, leaf to root) in the tree of the tree head it came with.
 */
struct AttestationReceipt {
  1: required i64 index,
  2: required list<binary> audit_path,
}

/**
 * The ledger's answer to a witness's batches: one receipt per batch, in order, and the
 * signed tree head (cortex_rm/accounting/tree_heads.py's encoding) their proofs lead to.
 */
struct AttestationReceipts {
  1: required list<AttestationReceipt> receipts,
  2: required binary tree_head,
}

/**
 * The file system refused: `java_class` is the exception Hadoop's client throws
 * (java.io.FileNotFoundException, ...SecretManager$InvalidToken, ...).
 */
exception FsFailure {
  1: required string java_class,
  2: required string message,
}

/**
 * callerKey's assertion: the RM's signed, short-lived word that `user` authenticated at
 * the entry node `audience` (cortex_rm/events/caller_assertions.py).  The entry node puts it
 * in every InvokeFunction of that user's triggers; the executor checks it.
 */
struct CallerAssertion {
  1: required string user,
  2: required binary audience,       // 20 bytes big-endian: the entry node's ring id
  3: required i64 issued_ms,         // ms since the Unix epoch, the RM's clock
  4: required i64 expires_ms,
  5: required binary nonce,          // 16 random bytes
  6: required binary signer_key,     // DER SPKI of the RM's ring key; its SHA-1 is the RM's ring id
  7: required binary signature,      // ECDSA P-256 over caller_assertions.signed_bytes
}

/**
 * callerKey's question: one of a user's signed requests to the calling node, as the node saw
 * it (cortex_rm/events/request_proofs.py): the RM checks it with the entry key it derives.
 */
struct CallerProof {
  1: required binary token_identifier,
  2: required binary node,            // the ring id it was signed for, 20 bytes
  3: required string method,
  4: required string host,            // the Host it was sent to
  5: required string target,          // path and query, as sent
  6: required string body_sha256,     // 64 hex digits
  7: required i64 time_ms,
  8: required string nonce,           // 32 hex digits
  9: required binary signature,       // 32 bytes
}

/**
 * callerKey's answer: the user's assertion for the calling node, and her token's entry key
 * for that node (HMAC-SHA256 of its ring id under the token's password,
 * cortex_rm/events/request_proofs.py), with which the node checks her signed requests.
 */
struct CallerKey {
  1: required CallerAssertion assertion,
  2: required binary entry_key,      // 32 bytes: for the node and the proof's hour
}

/**
 * openFunctionCode's refusal: the record is not a registration this RM holds now (not
 * signed by a ResourceManager's ring key, an older version no longer kept, a deleted
 * function...).  The node reads the registration from the ring again.
 */
exception FunctionRefused {
  1: required string message,
}

/** callerKey's refusal: the token authenticates nobody (malformed, forged, expired, revoked). */
exception CredentialRefused {
  1: required string message,
}

/** The node made this call too often; it may try again after `retry_after_ms`. */
exception TryLater {
  1: required string message,
  2: required i32 retry_after_ms,
}

service NodeTracker {
  RegistrationResponse registerNode(1: NodeRegistration registration)
      throws (1: NodeRefused refused),

  HeartbeatResponse nodeHeartbeat(1: NodeStatus status)
      throws (1: NodeRefused refused),

  BlockCommands blockReport(1: NodeAddress node_id, 2: BlockReport report)
      throws (1: NodeRefused refused),

  i64 commitWrite(1: NodeAddress node_id, 2: WriteCommit commit)   // the file's length
      throws (1: NodeRefused refused, 2: FsFailure failure),

  BlockLocations locateBlocks(1: NodeAddress node_id, 2: string ticket, 3: i64 offset, 4: i64 length)
      throws (1: NodeRefused refused, 2: FsFailure failure),

  /**
   * A node localizing a container's resource: `container_token` (identifier and password,
   * as the node was given it) vouches that the RM granted this node a container of its
   * user; the file is read as that user, or, when `public_only`, only if everyone may read it.
   */
  LocalizationSource openForLocalization(1: NodeAddress node_id, 2: binary token_identifier,
                                         3: binary token_password, 4: string path, 5: bool public_only)
      throws (1: NodeRefused refused, 2: FsFailure failure),

  /**
   * A node has cleaned up a finished application and aggregates its containers' logs into
   * the file system, as the application's owner (the RM knows who that is).
   */
  AggregationTarget openForAggregation(1: NodeAddress node_id, 2: string application_id)
      throws (1: NodeRefused refused, 2: FsFailure failure),

  /**
   * Which runtime image the cluster runs, and a read ticket for its archive
   * (/cortex/images/<sha256>.tar.zst, which everyone must be able to read); no source while
   * the archive has not been uploaded.
   */
  RuntimeImage openRuntimeImage(1: NodeAddress node_id)
      throws (1: NodeRefused refused, 2: FsFailure failure),

  /**
   * What a node needs to place an application's containers in its network policy.
   */
  ApplicationNetwork applicationNetwork(1: NodeAddress node_id, 2: string application_id)
      throws (1: NodeRefused refused),

  /**
   * A witness's signed attestation batches (cortex_rm/accounting/attestations.py's encoding),
   * for the ledger: every batch must be signed by the key of this connection, and at most
   * 16 batches go in one call.  A batch already in the ledger is not appended again: its
   * receipt names the first copy.
   */
  AttestationReceipts submitAttestations(1: NodeAddress node_id, 2: list<binary> batches)
      throws (1: NodeRefused refused),

  /**
   * A node about to run a function fetches its code: `function` is the registration
   * record as the ring holds it (Record: the Ring section below), written and signed by a
   * ResourceManager.  The RM checks the signature, that the writer is a ResourceManager,
   * and that the registration is one it holds (the current version or a kept one, not
   * deleted); the answer is the code file's length and modification time (the node checks
   * them against the registration's) and an OPEN ticket for it as the function's owner.
   */
  LocalizationSource openFunctionCode(1: NodeAddress node_id, 2: Record function)
      throws (1: NodeRefused refused, 2: FsFailure failure, 3: FunctionRefused function_refused, 4: TryLater busy),

  /**
   * Who sent a signed request to the calling node: `proof` is the request (users never show
   * nodes their password: they sign their requests).  The RM checks it was signed for this
   * connection's ring id, sent to the node's registered web address, and with the token's
   * entry key for that node and hour; the answer is the user's name in an assertion the RM
   * signed for the node (the audience), for the node's triggers, and that entry key.
   */
  CallerKey callerKey(1: NodeAddress node_id, 2: CallerProof proof)
      throws (1: NodeRefused refused, 2: CredentialRefused credential_refused, 3: TryLater busy),
}

// ------------------------------------------------------------------ Ring
//
// What ring members (cortex_rm/dht) send each other: Chord membership and
// routing, SWIM failure detection and the replicated key space.  Every message
// is one-way: a request carries an id (`request_id`, or SWIM's `seq`) and its
// answer is another message naming that id, so the only call is the oneway
// `RingService.deliver`.  Each message, with who sent it and the rumours riding
// on it, travels as one `Envelope`.
//
// The wire (cortex_rm/internal/ring_transport.py): inside mutual TLS, frames of a
// 4-byte big-endian length and a body of at most 1 MiB; each body is one
// `RingService.deliver` oneway call in Thrift's strict binary protocol, exactly
// what the generated RingService client writes on a framed transport.
//
// The receiver checks that the ring id of the certificate the connection
// presented equals `Envelope.sender.node_id` (SHA-1 of the key's DER
// SubjectPublicKeyInfo), so `sender` is authenticated.  Every value is
// validated before a ring core sees it (cortex_rm/internal/ring_codec.py says the
// bounds): ring ids are exactly 20 bytes, ids and counters are non-negative,
// lists and strings are bounded, and each union has exactly one member set.
//
// Field names are those of the Python dataclasses (chord_messages.py,
// swim_messages.py, kv_messages.py); the codec's tests check they agree.

/** A ring member (dht/peer.py): its ring id and the `host:port` its transport listens on. */
struct Peer {
  1: required binary node_id,  // the 160-bit ring id, 20 bytes big-endian
  2: required string address,  // host:port
}

// ---- Chord (dht/chord_messages.py)

/** Request: who owns `key`, or whom should I ask next? */
struct FindSuccessor {
  1: required i64 request_id,
  2: required binary key,      // a point on the ring, 20 bytes big-endian
  // a joining node's own lookup: answer as if the sender were not on the ring
  // (the ring may still list a node that restarted; its answer must not be itself)
  3: required bool exclude_sender,
}

/** Answer to FindSuccessor: `peer` owns the key when `final`, else ask `peer`. */
struct FindSuccessorReply {
  1: required i64 request_id,
  2: required Peer peer,
  3: required bool final,
}

/** Request (stabilize): send me your predecessor and your successor list. */
struct GetNeighbours {
  1: required i64 request_id,
}

/** Answer to GetNeighbours (at most 64 successors). */
struct NeighboursReply {
  1: required i64 request_id,
  2: optional Peer predecessor,  // absent: the sender knows none
  3: required list<Peer> successors,
}

/** One-way: the sender believes it may be the receiver's predecessor. */
struct Notify {
}

/** Request (check_predecessor): are you alive? */
struct Ping {
  1: required i64 request_id,
}

/** Answer to Ping. */
struct Pong {
  1: required i64 request_id,
}

/** One-way, from a node leaving gracefully: its predecessor and its successor list. */
struct Leave {
  1: optional Peer predecessor,
  2: required list<Peer> successors,
}

// ---- SWIM (dht/swim_messages.py)

/** Request: are you alive?  (`seq` is the prober's, echoed by the ack.) */
struct Probe {
  1: required i64 seq,
}

/** Answer to Probe, or the forwarded answer to a ProbeRequest. */
struct Ack {
  1: required i64 seq,
}

/** Request: probe `target` for me and forward its ack as `Ack(seq)`. */
struct ProbeRequest {
  1: required i64 seq,
  2: required Peer target,
}

/** Answer to ProbeRequest: I am alive, but `target` did not answer me either. */
struct Nack {
  1: required i64 seq,
}

/** What the group believes of a member. */
enum MemberStatus {
  ALIVE = 1,
  SUSPECT = 2,
  DEAD = 3,
  LEFT = 4,
}

/**
 * A piggybacked membership rumour: `peer` is `status` as of its `incarnation`.
 * `accuser` (SUSPECT only) is the member whose probe failed; relays keep it, so
 * receivers count independent suspicions (Lifeguard).
 */
struct MemberUpdate {
  1: required Peer peer,
  2: required MemberStatus status,
  3: required i64 incarnation,
  4: optional Peer accuser,
  5: required i64 work,          // ALIVE: the subject's proof of work (ring_work.py)
  6: required binary signer_key, // DER SPKI: the subject's (ALIVE, LEFT) or the accuser's
  7: required binary signature,  // ECDSA P-256 over ring_trust.rumour_message
}

/** A piggybacked payload of a registered gossip section (the section's own encoding). */
struct GossipItem {
  1: required string section,
  2: required string key,
  3: required binary payload,
  4: required binary publisher,  // 20 bytes big-endian: SHA-1 of signer_key
  5: required binary signer_key,
  6: required binary signature,  // over ring_trust.gossip_message
}

// ---- Key space (dht/kv_messages.py)

/** One value under a key; `version` orders writes, `writer` (a ring id) breaks ties. */
struct Record {
  1: required string key,
  2: required binary value,
  3: required i64 version,
  4: required binary writer,   // 20 bytes big-endian: SHA-1 of signer_key
  5: required binary signer_key,
  6: required binary signature, // over ring_trust.record_message
}

/** Request to the key's owner: store `record` (written and signed by the sender). */
struct PutRecord {
  1: required i64 request_id,
  2: required Record record,
}

/** Answer to PutRecord: the stored record, or `error`. */
struct PutReply {
  1: required i64 request_id,
  2: optional Record record,
  3: required string error,    // empty when the write succeeded
}

/** Request to the key's owner (or a replica): the record under `key`. */
struct GetRecord {
  1: required i64 request_id,
  2: required string key,
}

/** Answer to GetRecord: absent `record` when the receiver holds none. */
struct GetReply {
  1: required i64 request_id,
  2: optional Record record,
}

/** One key and the version the sender holds (an entry of ReplicaDigest). */
struct DigestEntry {
  1: required string key,
  2: required i64 version,
}

/** One-way, owner to replica: the versions I hold. */
struct ReplicaDigest {
  1: required list<DigestEntry> entries,
}

/** One-way answer to ReplicaDigest: send me these keys. */
struct ReplicaWant {
  1: required list<string> keys,
}

/** One-way: keep these records (each only if newer than what the receiver has). */
struct StoreReplicas {
  1: required list<Record> records,
}

/**
 * A message for a service above the ring (dht/direct_messages.py): sent straight to one
 * member, never piggybacked; `body` is the channel's own encoding (events: event_codec.py).
 */
struct Direct {
  1: required string channel,  // at most 64 characters
  2: required binary body,     // at most 1 MiB less 16 KiB
}

// ---- The envelope

/** The one message an envelope carries: exactly one member is set. */
union RingMessage {
  1: FindSuccessor find_successor,
  2: FindSuccessorReply find_successor_reply,
  3: GetNeighbours get_neighbours,
  4: NeighboursReply neighbours_reply,
  5: Notify notify,
  6: Ping ping,
  7: Pong pong,
  8: Leave leave,
  20: Probe probe,
  21: Ack ack,
  22: ProbeRequest probe_request,
  23: Nack nack,
  40: PutRecord put_record,
  41: PutReply put_reply,
  42: GetRecord get_record,
  43: GetReply get_reply,
  44: ReplicaDigest replica_digest,
  45: ReplicaWant replica_want,
  46: StoreReplicas store_replicas,
  60: Direct direct,
}

/** A rumour riding on an envelope: exactly one member is set. */
union Piggyback {
  1: MemberUpdate member_update,
  2: GossipItem gossip_item,
}

/** `body` from `sender`, with rumours for the receiver's membership and gossip sections. */
struct Envelope {
  1: required Peer sender,
  2: required RingMessage body,
  3: required list<Piggyback> piggyback,  // at most 256
  4: required i64 work,                   // the sender's proof of work on its key
}

/** The ring's only call: one-way delivery of an envelope (answers are envelopes too). */
service RingService {
  oneway void deliver(1: Envelope envelope),
}

// ------------------------------------------------------------------ Events
//
// What an entry node and a function's executors say to each other (cortex_rm/events):
// the body of a ring `Direct` message on channel "events", one `EventMessage` in
// Thrift's strict binary protocol (cortex_rm/internal/event_codec.py bounds every field).

/** Entry node -> executor: run this activation of the function `function` registers. */
struct InvokeFunction {
  1: required i64 request_id,
  2: required string activation_id,
  3: required Record function,        // the registration, as an RM wrote and signed it
  4: required binary payload,         // the trigger's JSON
  5: required i64 timeout_ms,         // how long the entry node waits for the outcome
  6: optional CallerAssertion caller, // who triggered it, by the RM's word (absent: a scheduled tick)
  7: optional i64 tick_ms,            // a scheduled tick: the tick it fires (the payload is the tick's)
}

/** Executor -> entry node: how the activation ended here, signed by the executor's node key. */
struct FunctionOutcome {
  1: required i64 request_id,
  2: required string activation_id,
  3: required string status,          // events/outcomes.py: success, application_error, timeout...
  4: required binary result,          // the handler's JSON (success) or nothing
  5: required string error,
  6: required binary logs,            // the activation's stdout and stderr, cut to a bound
  7: required i64 duration_ms,
  8: required bool cold_start,
  9: required binary signer_key,      // DER SPKI; its SHA-1 is the sender's ring id
  10: required binary signature,      // ECDSA P-256 over events/outcomes.py's signed bytes
}

/** Exactly one member is set. */
union EventMessage {
  1: InvokeFunction invoke,
  2: FunctionOutcome outcome,
}

// ------------------------------------------------------------------ The RM's journal
//
// The body of a ring `Direct` message on channel "rm-journal", between the RM-eligible nodes
// only: one `JournalMessage` (cortex_rm/ha/journal.py says what each means;
// cortex_rm/internal/journal_codec.py bounds every field).

/** An epoch (Raft's term): compared as (number, node). */
struct JournalEpoch {
  1: required i64 number,
  2: required binary node,            // the ring id of the node that campaigned in it, 20 bytes
}

struct JournalEntry {
  1: required JournalEpoch epoch,
  2: required i64 seq,
  3: required binary data,            // empty: a leader's no-op
}

struct JournalPrepare {
  1: required JournalEpoch epoch,
  2: required i64 last_seq,
  3: required JournalEpoch last_epoch,
  4: optional bool pre,               // a pre-vote (absent: false)
}

struct JournalPromise {
  1: required JournalEpoch epoch,
  2: required bool granted,
  3: optional bool pre,               // the answer to a pre-vote (absent: false)
}

struct JournalAppend {
  1: required JournalEpoch epoch,
  2: required i64 prev_seq,
  3: required JournalEpoch prev_epoch,
  4: required list<JournalEntry> entries,  // at most ha/journal.py's MAX_BATCH
  5: required i64 commit,
}

struct JournalAppended {
  1: required JournalEpoch epoch,
  2: required bool ok,
  3: required i64 match,
}

struct JournalRefused {
  1: required JournalEpoch promised,
}

/** Exactly one member is set. */
union JournalMessage {
  1: JournalPrepare prepare,
  2: JournalPromise promise,
  3: JournalAppend append,
  4: JournalAppended appended,
  5: JournalRefused refused,
}
