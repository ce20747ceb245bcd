package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
	"go.yaml.in/yaml/v3"
)

// Actions a rule may take.
const (
	Allow           = "allow"
	Mask            = "mask"
	Block           = "block"
	RequireApproval = "require_approval"
)

// DefaultGrantMinutes is how long an approval's one-shot grant lasts when
// the rule does not say.
const DefaultGrantMinutes = 15

// MaxApprovals bounds a rule's approvals: more people than this are a
// process, not a hold of a request.
const MaxApprovals = 5

// Grant kinds.
const (
	GrantOnce   = "once"
	GrantWindow = "window"
)

// Grant is what an approval lets through: kind once (the default) lets
// a retry of the same request (same digest, same workload) pass once
// within Minutes of the approval; kind window lets every request of the
// same workload that the same rule holds pass within Minutes.
type Grant struct {
	Kind    string `yaml:"kind,omitempty" json:"kind,omitempty"`
	Minutes int    `yaml:"minutes,omitempty" json:"minutes,omitempty"`
}

// File is a policy file as written.
type File struct {
	// Rules are tried in order; the first whose when is true decides.
	Rules []Rule `yaml:"rules" json:"rules"`
	// Namespaces: a Kubernetes namespace's default, when no rule matched.
	Namespaces map[string]Default `yaml:"namespaces,omitempty" json:"namespaces,omitempty"`
	// Default decides what nothing else did; without it, mask.
	Default *Default `yaml:"default,omitempty" json:"default,omitempty"`
}

// Rule is one rule of a policy file.
type Rule struct {
	Name    string `yaml:"name" json:"name"`
	When    string `yaml:"when" json:"when"`
	Action  string `yaml:"action" json:"action"`
	Message string `yaml:"message,omitempty" json:"message,omitempty"`
	// Approvers and Grant belong to require_approval.
	// Approvers are the collector roles that may decide (approver,
	// admin); empty: approver (admin always may).
	Approvers []string `yaml:"approvers,omitempty" json:"approvers,omitempty"`
	// Approvals is how many different approvers must approve (1 to
	// MaxApprovals); one denial denies. Zero: 1.
	Approvals int    `yaml:"approvals,omitempty" json:"approvals,omitempty"`
	Grant     *Grant `yaml:"grant,omitempty" json:"grant,omitempty"`
}

// Default is a decision without a condition.
type Default struct {
	Action  string `yaml:"action" json:"action"`
	Message string `yaml:"message,omitempty" json:"message,omitempty"`
}

// Decision is what the policy decided for one request.
type Decision struct {
	Action  string
	Rule    string // the rule's name; "default" or "namespace:NS" for a default
	Message string
	Version string // the policy's version
	// Approvers and GrantMinutes belong to require_approval.
	Approvers    []string
	GrantMinutes int
	GrantKind    string // GrantOnce or GrantWindow
	Approvals    int    // different approvers needed, at least 1
}

// Policy is a compiled policy file. It is safe for concurrent use.
type Policy struct {
	version    string
	rules      []compiled
	namespaces map[string]Decision
	fallback   Decision
}

type compiled struct {
	name, action, message string
	approvers             []string
	approvals             int
	grantMinutes          int
	grantKind             string
	prg                   cel.Program
}

// maxFileSize bounds a policy file: rules, not data.
const maxFileSize = 1 << 20

// Parse reads and compiles a policy file. A rule that does not compile is
// refused with its name and the CEL error.
func Parse(r io.Reader) (*Policy, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the policy: %w", err)
	}
	if len(raw) > maxFileSize {
		return nil, fmt.Errorf("policy file over %d bytes", maxFileSize)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true) // a misspelt key is an error, not a rule that never applies
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("policy file is empty")
		}
		return nil, fmt.Errorf("policy file: %w", err)
	}
	return Compile(f)
}

// Compile checks and compiles a policy.
func Compile(f File) (*Policy, error) {
	version, err := Version(f)
	if err != nil {
		return nil, err
	}
	env, err := newEnv()
	if err != nil {
		return nil, err
	}
	p := &Policy{version: version, namespaces: make(map[string]Decision, len(f.Namespaces))}
	seen := make(map[string]bool, len(f.Rules))
	for i, r := range f.Rules {
		c, err := compileRule(env, r, seen)
		if err != nil {
			if r.Name == "" {
				return nil, fmt.Errorf("rule %d: %w", i+1, err)
			}
			return nil, fmt.Errorf("rule %q: %w", r.Name, err)
		}
		p.rules = append(p.rules, c)
	}
	for ns, d := range f.Namespaces {
		if ns == "" {
			return nil, errors.New("namespaces: an empty namespace name")
		}
		if err := checkAction(d.Action); err != nil {
			return nil, fmt.Errorf("namespaces: %q: %w", ns, err)
		}
		p.namespaces[ns] = Decision{Action: d.Action, Rule: "namespace:" + ns, Message: d.Message, Version: version, GrantMinutes: DefaultGrantMinutes}
	}
	p.fallback = Decision{Action: Mask, Rule: "default", Version: version, GrantMinutes: DefaultGrantMinutes}
	if f.Default != nil {
		if err := checkAction(f.Default.Action); err != nil {
			return nil, fmt.Errorf("default: %w", err)
		}
		p.fallback.Action, p.fallback.Message = f.Default.Action, f.Default.Message
	}
	return p, nil
}

func compileRule(env *cel.Env, r Rule, seen map[string]bool) (compiled, error) {
	switch {
	case r.Name == "":
		return compiled{}, errors.New("no name")
	case seen[r.Name]:
		return compiled{}, errors.New("a second rule of that name")
	case r.When == "":
		return compiled{}, errors.New("no when")
	}
	seen[r.Name] = true
	if err := checkAction(r.Action); err != nil {
		return compiled{}, err
	}
	minutes, kind, err := checkApproval(r)
	if err != nil {
		return compiled{}, err
	}
	ast, iss := env.Compile(r.When)
	if iss.Err() != nil {
		return compiled{}, fmt.Errorf("when: %w", iss.Err())
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return compiled{}, fmt.Errorf("when: is a %s, not a bool", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return compiled{}, fmt.Errorf("when: %w", err)
	}
	return compiled{name: r.Name, action: r.Action, message: r.Message, approvers: r.Approvers, approvals: max(r.Approvals, 1), grantMinutes: minutes, grantKind: kind, prg: prg}, nil
}

// checkApproval checks a rule's approvers and grant and returns the
// grant's minutes and kind.
func checkApproval(r Rule) (int, string, error) {
	if r.Action != RequireApproval {
		if len(r.Approvers) > 0 || r.Grant != nil || r.Approvals != 0 {
			return 0, "", fmt.Errorf("approvers, approvals and grant belong to action %s, not %s", RequireApproval, r.Action)
		}
		return DefaultGrantMinutes, GrantOnce, nil
	}
	for _, a := range r.Approvers {
		if a != "approver" && a != "admin" {
			// Groups come with OIDC; until then the collector knows roles.
			return 0, "", fmt.Errorf("approvers: %q: want the collector role approver or admin", a)
		}
	}
	if r.Approvals < 0 || r.Approvals > MaxApprovals {
		return 0, "", fmt.Errorf("approvals: %d: want 1 to %d different approvers", r.Approvals, MaxApprovals)
	}
	if r.Grant == nil {
		return DefaultGrantMinutes, GrantOnce, nil
	}
	kind := r.Grant.Kind
	switch kind {
	case "":
		kind = GrantOnce
	case GrantOnce, GrantWindow:
	default:
		return 0, "", fmt.Errorf("grant: kind %q: want %s or %s", r.Grant.Kind, GrantOnce, GrantWindow)
	}
	switch m := r.Grant.Minutes; {
	case m == 0:
		return DefaultGrantMinutes, kind, nil
	case m < 1 || m > 24*60:
		return 0, "", fmt.Errorf("grant: minutes %d: want 1 to 1440", m)
	default:
		return m, kind, nil
	}
}

func checkAction(a string) error {
	switch a {
	case Allow, Mask, Block, RequireApproval:
		return nil
	case "":
		return errors.New("no action (allow, mask, block or require_approval)")
	}
	return fmt.Errorf("action %q: not allow, mask, block or require_approval", a)
}

// newEnv declares the variables a rule sees, typed, so that a misspelt
// field is a compile error rather than a runtime one.
func newEnv() (*cel.Env, error) {
	env, err := cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[Workload](), reflect.TypeFor[Request](), reflect.TypeFor[Connection](), ext.ParseStructTags(true)),
		ext.Strings(),
		cel.Variable("workload", cel.ObjectType("policy.Workload")),
		cel.Variable("request", cel.ObjectType("policy.Request")),
		cel.Variable("findings", cel.MapType(cel.StringType, cel.IntType)),
		cel.Variable("connection", cel.ObjectType("policy.Connection")),
		cel.Variable("now", cel.TimestampType),
	)
	if err != nil {
		return nil, fmt.Errorf("policy: the CEL environment: %w", err)
	}
	return env, nil
}

// Version is a policy's content hash: sha256 of its canonical form (JSON,
// keys in a fixed order), so that comments, layout and key order do not
// change it.
func Version(f File) (string, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("policy: canonical form: %w", err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Version is the policy's content hash.
func (p *Policy) Version() string { return p.version }

// Rules names the policy's rules in order.
func (p *Policy) Rules() []string {
	names := make([]string, len(p.rules))
	for i, r := range p.rules {
		names[i] = r.name
	}
	return names
}

// Namespaces names the namespaces with a default, sorted.
func (p *Policy) Namespaces() []string {
	ns := make([]string, 0, len(p.namespaces))
	for n := range p.namespaces {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Decide evaluates the rules in order; the first that holds decides, then
// the workload's namespace default, then the catch-all. A rule that fails
// to evaluate (a missing map key, say) blocks: an error never lets a
// request through that the rule may have been written to stop.
func (p *Policy) Decide(in *Input) Decision {
	act := activation{in: in}
	for i := range p.rules {
		r := &p.rules[i]
		out, _, err := r.prg.Eval(&act)
		if err != nil {
			return Decision{Action: Block, Rule: r.name, Version: p.version,
				Message: fmt.Sprintf("the rule could not be evaluated (%v), and a rule that fails blocks", err)}
		}
		if out == types.True {
			return Decision{Action: r.action, Rule: r.name, Message: r.message, Version: p.version,
				Approvers: r.approvers, Approvals: r.approvals, GrantMinutes: r.grantMinutes, GrantKind: r.grantKind}
		}
	}
	if d, ok := p.namespaces[in.Workload.Namespace]; ok && in.Workload.Namespace != "" {
		return d
	}
	return p.fallback
}

// activation hands the input to CEL without building a map per request.
type activation struct{ in *Input }

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "workload":
		return &a.in.Workload, true
	case "request":
		return &a.in.Request, true
	case "findings":
		return a.in.Findings, true
	case "connection":
		return &a.in.Connection, true
	case "now":
		return a.in.Now, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

var _ interpreter.Activation = (*activation)(nil)
