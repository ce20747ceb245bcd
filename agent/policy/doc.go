// Package policy decides, per request, what the agent does with it: allow,
// mask, block or require_approval, by ordered rules written in CEL (github.com/google/cel-go).
// A policy file is compiled once, at load; a decision evaluates the
// compiled rules against typed variables (workload, request, findings,
// connection, now). It is the only place an action is chosen.
//
// Masking is not a policy choice: a request is always masked before it
// goes upstream, whatever the action. "allow" and "mask" both forward the
// masked request; "block" forwards nothing; "require_approval" holds it
// until a person approves it at the collector (agent/proxy does the
// holding). A policy can refuse more
// requests, never unmask one (DESIGN.md: no secret a masking rule matches
// reaches the upstream).
package policy
