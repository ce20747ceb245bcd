package policy

import (
	"strings"
	"time"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
)

// Workload is the `workload` variable of a rule: who makes the request.
// The cel tags are the field names rules use.
type Workload struct {
	Kind           string            `cel:"kind"`
	Namespace      string            `cel:"namespace"`
	Pod            string            `cel:"pod"`
	ServiceAccount string            `cel:"service_account"`
	Labels         map[string]string `cel:"labels"`
	Owner          string            `cel:"owner"`
	Node           string            `cel:"node"`
	Unit           string            `cel:"unit"`
	Exe            string            `cel:"exe"`
	Comm           string            `cel:"comm"`
	UID            int64             `cel:"uid"`
	CgroupPath     string            `cel:"cgroup"`
	Identity       string            `cel:"identity"`
	SPIFFEID       string            `cel:"spiffe_id"`
}

// Request is the `request` variable: what the workload sends, as parsed.
type Request struct {
	Endpoint string `cel:"endpoint"`
	Method   string `cel:"method"`
	Path     string `cel:"path"`
	Model    string `cel:"model"`
	Stream   bool   `cel:"stream"`
	// Text is the text of the messages, the prompt and the input, joined by
	// newlines, as the client sent it (before masking).
	Text string `cel:"text"`
	// Size is the body's size in bytes.
	Size int64 `cel:"size"`
	// Tokens estimates Text's tokens: a token is about 4 characters of
	// English text (OpenAI's rule of thumb in its tokenizer guide).
	Tokens int64 `cel:"tokens"`
	// Tools are the names of the tools offered (a built-in tool's type).
	Tools     []string `cel:"tools"`
	MaxTokens int64    `cel:"max_tokens"`
}

// Connection is the `connection` variable: how the request arrived.
type Connection struct {
	SNI         string `cel:"sni"`
	Destination string `cel:"destination"`
	Mode        string `cel:"mode"`
}

// Input is everything a decision looks at. Findings maps a masking rule's
// id to the number of its matches in the request, found before masking
// replaced them.
type Input struct {
	Workload   Workload
	Request    Request
	Findings   map[string]int64
	Connection Connection
	Now        time.Time
}

// WorkloadOf is the rule's view of a recorded workload.
func WorkloadOf(w audit.Workload, node string) Workload {
	return Workload{
		Kind: w.Kind, Namespace: w.Namespace, Pod: w.Pod, ServiceAccount: w.ServiceAccount,
		Labels: w.Labels, Owner: w.Owner, Node: node, Unit: w.Unit, Exe: w.Exe, Comm: w.Comm,
		UID: int64(w.UID), CgroupPath: w.CgroupPath, Identity: w.Identity, SPIFFEID: w.SPIFFEID,
	}
}

// RequestOf is the rule's view of a parsed request body.
func RequestOf(method, path string, size int64, r openai.Request) Request {
	var b strings.Builder
	add := func(s string) {
		if s == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(s)
	}
	for _, m := range r.Messages {
		add(m.Content)
	}
	add(r.Prompt)
	for _, s := range r.Input {
		add(s)
	}
	text := b.String()
	return Request{
		Endpoint: string(r.Endpoint), Method: method, Path: path, Model: r.Model, Stream: r.Stream,
		Text: text, Size: size, Tokens: int64((len(text) + 3) / 4), Tools: r.Tools, MaxTokens: int64(r.MaxTokens),
	}
}

// FindingsOf counts findings per masking rule: the request's, query and
// body, as masking found them.
func FindingsOf(fs []audit.Finding) map[string]int64 {
	m := make(map[string]int64, len(fs))
	for _, f := range fs {
		m[f.Rule] += int64(f.Count)
	}
	return m
}
