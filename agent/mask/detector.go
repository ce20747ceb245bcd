package mask

import "github.com/promptrail/promptrail/agent/secrets"

// Detector finds secrets; *secrets.Engine is one.
type Detector interface {
	// Find returns the secrets in text, sorted by Start and not
	// overlapping.
	Find(text []byte) []secrets.Match
	// Pending returns the smallest i such that text[i:] could still
	// become part of a secret if more text arrived; len(text) if none.
	Pending(text []byte) int
	// MaxPending is how much text a Stream may hold back.
	MaxPending() int
	// Action says what the rule ruleID asks for.
	Action(ruleID string) secrets.Action
}

// HeldTextCapRule is the rule of the marker and Finding that a Stream
// writes when the text it holds back outgrows Detector.MaxPending. The
// held text is then masked, not released: it starts with what could be the
// start of a secret (an opener such as "-----BEGIN PRIVATE KEY-----" that
// has not closed yet), so the Stream masks it and goes on dropping what
// arrives, keeping only the first KiB of the held text and the latest 3
// KiB, until the detector no longer considers that start pending in them.
// If the text then turned out to be a secret, its end is dropped with it;
// if the stream ends first, everything from the start is dropped. A capped
// Stream's output is thus not Masker.Text of the whole text: it masks more.
const HeldTextCapRule = "held-text-cap"

// actionMask is the action of HeldTextCapRule findings.
const actionMask = secrets.ActionMask

// Finding reports secrets that were masked: how many times a secret with
// one fingerprint was found by one rule in one place. It never holds the
// secret or a part of it.
type Finding struct {
	Rule string `json:"rule"`
	// Where is "request" or "response" (what the caller passed).
	Where string `json:"where"`
	// Path is the JSON path of the string value (such as
	// $.messages[0].content) or the caller's name for the text; object
	// keys that hold secrets appear masked in it.
	Path        string         `json:"path,omitempty"`
	Count       int            `json:"count"`
	Fingerprint string         `json:"fingerprint"`
	Action      secrets.Action `json:"action"`
}

// findingSet merges findings by (where, rule, path, fingerprint), in the
// order of first occurrence.
type findingSet struct {
	list  []Finding
	index map[findingKey]int
}

type findingKey struct{ where, rule, path, fp string }

func (fs *findingSet) add(f Finding) {
	k := findingKey{f.Where, f.Rule, f.Path, f.Fingerprint}
	if i, ok := fs.index[k]; ok {
		fs.list[i].Count += f.Count
		return
	}
	if fs.index == nil {
		fs.index = make(map[findingKey]int)
	}
	fs.index[k] = len(fs.list)
	fs.list = append(fs.list, f)
}

func (fs *findingSet) merge(list []Finding) {
	for _, f := range list {
		fs.add(f)
	}
}

// findings returns a copy of the merged findings; nil if none.
func (fs *findingSet) findings() []Finding {
	if len(fs.list) == 0 {
		return nil
	}
	return append([]Finding(nil), fs.list...)
}
