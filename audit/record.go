// Package audit defines the audit record: one JSON object per exchange
// between a workload and an LLM API, as the agent records it and the
// collector stores it. Agent and collector both import it.
package audit

import (
	"crypto/rand"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/promptrail/promptrail/agent/openai"
)

// Record is one request/response exchange. Bodies are as they went over
// the wire (masked, once masking exists), bounded by the agent's limit.
type Record struct {
	// ID is a ULID: unique, and sorting IDs sorts records by start time.
	ID string `json:"id"`
	// Kind is "exchange" for a request and its response, or "connection"
	// for a connection to a target address that was not decrypted
	// (spliced or refused: no content, only who, where and how much).
	// Empty in records written before connections were recorded: an
	// exchange.
	Kind    string `json:"kind,omitempty"`
	AgentID string `json:"agent_id,omitempty"`
	Node    string `json:"node,omitempty"`

	// Seq numbers the agent's records 1, 2, 3… in the order they were
	// sealed; PrevHash is the Hash of record Seq-1 ("" for Seq 1) and Hash
	// is the record's own (see Seal). A gap, an edit or a reordering
	// between the agent and the store breaks the chain.
	Seq      uint64 `json:"seq,omitempty"`
	PrevHash string `json:"prev_hash,omitempty"`
	Hash     string `json:"hash,omitempty"`

	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	DurationMS float64   `json:"duration_ms"`
	// TTFTMS is the time from the request's start to the first token: the
	// first content delta of a stream, or the first body byte otherwise.
	TTFTMS float64 `json:"ttft_ms,omitempty"`
	// Incomplete says that the exchange did not finish: the client went
	// away, the upstream failed or stalled, or the agent stopped.
	Incomplete bool `json:"incomplete,omitempty"`
	// Unspooled says that the agent's spool was full or failing when the
	// request went upstream, and the agent was configured to let it pass:
	// the request was not on durable record before it left the node.
	Unspooled bool `json:"unspooled,omitempty"`

	Workload   Workload   `json:"workload"`
	Connection Connection `json:"connection"`
	Request    Request    `json:"request,omitzero"` // absent from connection records
	Response   *Response  `json:"response,omitempty"`
	// Findings are the secrets masked in the exchange: never the secret,
	// never a part of it.
	Findings []Finding `json:"findings,omitempty"`
	Decision Decision  `json:"decision"`
	// ApprovalEvent is the step of an approval record (kind approval).
	ApprovalEvent *ApprovalEvent `json:"approval_event,omitempty"`
	// Error says what went wrong, in words an operator can act on.
	Error string `json:"error,omitempty"`
}

// Workload is who made the call: what the kernel gave (process, cgroup)
// and what identity resolution made of it.
type Workload struct {
	// Kind is "pod", "container", "systemd", "process" or "unknown".
	Kind string `json:"kind,omitempty"`
	// Identity is the stable name of the workload: k8s:<ns>/<sa>,
	// host:<node>/systemd/<unit> or host:<node>/uid/<user>/<exe>.
	Identity string `json:"identity,omitempty"`
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// Source says where the identity came from: "kubernetes" (the API),
	// "cgroup" (the cgroup path only) or "process".
	Source string `json:"source,omitempty"`

	Namespace      string            `json:"namespace,omitempty"`
	Pod            string            `json:"pod,omitempty"`
	PodUID         string            `json:"pod_uid,omitempty"`
	Container      string            `json:"container,omitempty"`
	ContainerID    string            `json:"container_id,omitempty"`
	Runtime        string            `json:"runtime,omitempty"`
	ServiceAccount string            `json:"service_account,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	// Owner is the controller that owns the pod, as kind/name
	// (Deployment/web, Job/backup, ...).
	Owner string `json:"owner,omitempty"`
	Unit  string `json:"unit,omitempty"` // systemd unit

	PID        uint32 `json:"pid,omitempty"`
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	User       string `json:"user,omitempty"`
	Comm       string `json:"comm,omitempty"`
	Exe        string `json:"exe,omitempty"`
	Cmdline    string `json:"cmdline,omitempty"`
	CgroupID   uint64 `json:"cgroup_id,omitempty"`
	CgroupPath string `json:"cgroup_path,omitempty"`
}

// Connection is how the call reached the agent.
type Connection struct {
	Mode       string `json:"mode"` // "transparent" (eBPF redirect) or "explicit" (HTTPS_PROXY)
	Client     string `json:"client"`
	OrigDst    string `json:"orig_dst,omitempty"`
	SNI        string `json:"sni,omitempty"`
	ALPN       string `json:"alpn,omitempty"`
	Proto      string `json:"proto,omitempty"` // HTTP/1.1 or HTTP/2.0, client side
	TLSVersion string `json:"tls_version,omitempty"`
	// ALPNOffered is the client's ALPN list, on connection records.
	ALPNOffered []string `json:"alpn_offered,omitempty"`
	// BytesSent and BytesReceived count what a spliced connection carried
	// from the client and back.
	BytesSent     int64 `json:"bytes_sent,omitempty"`
	BytesReceived int64 `json:"bytes_received,omitempty"`
}

// Kinds of records.
const (
	KindExchange   = "exchange"
	KindConnection = "connection"
)

// Request is what the workload sent.
type Request struct {
	Method      string            `json:"method"`
	Host        string            `json:"host"`
	Path        string            `json:"path"`
	Endpoint    openai.Endpoint   `json:"endpoint"`
	Model       string            `json:"model,omitempty"`
	Stream      bool              `json:"stream,omitempty"`
	Messages    []openai.Message  `json:"messages,omitempty"`
	Prompt      string            `json:"prompt,omitempty"`
	Input       []string          `json:"input,omitempty"`
	Tools       []string          `json:"tools,omitempty"`
	Multipart   *openai.Multipart `json:"multipart,omitempty"`
	ContentType string            `json:"content_type,omitempty"`
	Body        string            `json:"body,omitempty"`
	Size        int64             `json:"size"`
	Truncated   bool              `json:"truncated,omitempty"`
	ParseError  string            `json:"parse_error,omitempty"`
}

// Response is what came back. For streams Body is empty and Events holds
// the server-sent events (bounded); Choices holds the reassembled text.
type Response struct {
	Status       int                    `json:"status"`
	ContentType  string                 `json:"content_type,omitempty"`
	Model        string                 `json:"model,omitempty"`
	ID           string                 `json:"id,omitempty"`
	Choices      []openai.Choice        `json:"choices,omitempty"`
	FinishReason string                 `json:"finish_reason,omitempty"`
	Usage        *openai.Usage          `json:"usage,omitempty"`
	UsageSource  string                 `json:"usage_source,omitempty"` // response, stream or none
	APIError     *openai.APIError       `json:"api_error,omitempty"`
	Embeddings   int                    `json:"embeddings,omitempty"`
	Body         string                 `json:"body,omitempty"`
	Events       []openai.RecordedEvent `json:"events,omitempty"`
	EventCount   int                    `json:"event_count,omitempty"`
	Size         int64                  `json:"size"`
	Truncated    bool                   `json:"truncated,omitempty"`
	ParseError   string                 `json:"parse_error,omitempty"`
}

// Finding is one kind of secret found in one place of an exchange.
type Finding struct {
	Rule        string `json:"rule"`
	Where       string `json:"where"`          // "request", "response" or "workload" (its command line)
	Path        string `json:"path,omitempty"` // JSON path, e.g. $.messages[0].content
	Count       int    `json:"count"`
	Fingerprint string `json:"fingerprint"` // 8 hex digits of HMAC-SHA256(deployment key, secret)
	Action      string `json:"action"`      // "mask" or "block"
}

// Decision is what the agent did with the request.
type Decision struct {
	// Action is "allow" (forwarded as sent), "mask" (forwarded with secrets
	// masked), "block" (a rule blocks it; nothing went upstream) or
	// "reject" (malformed or too large; nothing went upstream). On
	// connection records it is "splice" (passed through undecrypted) or
	// "refuse" (closed; nothing went upstream).
	Action string `json:"action"`
	// Rule names the rule behind a block or a policy decision, or on
	// connection records why it
	// was not decrypted: "other-sni", "no-sni", "not-tls", "bad-hello",
	// "spool", "decryption-off".
	Rule string `json:"rule,omitempty"`
	// Message says in words why, where the rule alone does not.
	Message string `json:"message,omitempty"`
	// PolicyVersion is the version (content hash) of the policy in force
	// when the request was decided; Rule then names the policy rule that
	// decided it ("default", "namespace:NS" for a default), unless a
	// masking rule blocked the request first. Empty: no policy.
	PolicyVersion string `json:"policy_version,omitempty"`
	// Approval is the approval that held the request, when a policy rule
	// required one.
	Approval *ApprovalRef `json:"approval,omitempty"`
}

// NewID returns a fresh record ID for an exchange that started at t.
func NewID(t time.Time) string {
	return ulid.MustNew(ulid.Timestamp(t), rand.Reader).String()
}
