package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
	"github.com/promptrail/promptrail/collector/store"
	"github.com/promptrail/promptrail/internal/settings"
	"github.com/promptrail/promptrail/internal/termsafe"
)

// defaultReaderTokenFile is where `promptrail run` leaves a reader token,
// so that query, verify and export work on that host without flags.
const defaultReaderTokenFile = "/var/lib/promptrail/reader.token"

// clientFlags are the flags of the commands that call the collector.
type clientFlags struct{ collector, tokenFile *string }

func addClientFlags(fs *flag.FlagSet) clientFlags {
	fs.String("config", "", "YAML `file` of settings, keyed by flag name")
	return clientFlags{
		collector: fs.String("collector", "http://127.0.0.1:7070", "`URL` of the collector"),
		tokenFile: fs.String("token-file", "", "`file` holding a reader bearer token (default: "+defaultReaderTokenFile+" if it exists, as `promptrail run` writes it)"),
	}
}

func (f clientFlags) client() (*client.Client, error) {
	path := *f.tokenFile
	if path == "" {
		if _, err := os.Stat(defaultReaderTokenFile); err == nil {
			path = defaultReaderTokenFile
		}
	}
	token := ""
	if path != "" {
		t, err := auth.ReadTokenFile(path)
		if err != nil {
			return nil, err
		}
		token = t
	}
	return client.New(*f.collector, token, nil)
}

// filterFlags are the record filters of query and export.
type filterFlags struct {
	since, until, namespace, workload, model, finding, action, agent, q *string
}

func addFilterFlags(fs *flag.FlagSet) filterFlags {
	return filterFlags{
		since:     fs.String("since", "", "records that started at or after this `time`: RFC 3339 or a duration before now (90m, 24h, 7d)"),
		until:     fs.String("until", "", "records that started before this `time` (same forms as --since)"),
		namespace: fs.String("namespace", "", "Kubernetes `namespace` of the workload"),
		workload:  fs.String("workload", "", "workload `name`: identity (k8s:ns/sa), pod, owner (Deployment/web), systemd unit, container or command"),
		model:     fs.String("model", "", "`model` asked for, e.g. gpt-4o"),
		finding:   fs.String("finding", "", "records with a finding of this masking `rule`, e.g. aws-access-token"),
		action:    fs.String("action", "", "decision: allow, mask, block or reject"),
		agent:     fs.String("agent", "", "records of this agent `id` (the node name)"),
		q:         fs.String("q", "", "`text` in the prompt or the response (case-insensitive)"),
	}
}

func (f filterFlags) filter(now time.Time) (store.Filter, error) {
	since, err := collector.ParseTime(*f.since, now)
	if err != nil {
		return store.Filter{}, fmt.Errorf("--since: %w", err)
	}
	until, err := collector.ParseTime(*f.until, now)
	if err != nil {
		return store.Filter{}, fmt.Errorf("--until: %w", err)
	}
	return store.Filter{Since: since, Until: until, Namespace: *f.namespace, Workload: *f.workload, Model: *f.model,
		Finding: *f.finding, Action: *f.action, Agent: *f.agent, Q: *f.q}, nil
}

const querySummary = `Lists audit records from the collector, newest first, as a table (or
--json, --jsonl). Filters combine. --follow keeps printing new records as
they arrive, oldest first.`

func runQuery(ctx context.Context, args []string) error {
	fs := newFlagSet("query", querySummary)
	cf := addClientFlags(fs)
	ff := addFilterFlags(fs)
	limit := fs.Int("limit", 50, "most `records` to print (1 to 1000 per page; with --all, all pages)")
	all := fs.Bool("all", false, "print every matching record, page after page")
	asJSON := fs.Bool("json", false, "print a JSON array of the records")
	asJSONL := fs.Bool("jsonl", false, "print one JSON record per line")
	follow := fs.Bool("follow", false, "keep printing new matching records")
	every := fs.Duration("follow-interval", 2*time.Second, "how `often` --follow asks for new records")
	if err := settings.Parse(fs, args, "config"); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("--limit %d: want 1 to 1000", *limit)
	}
	f.Limit = *limit
	out := newRecordPrinter(Stdout, *asJSON, *asJSONL)
	var recs []audit.Record
	err = c.EachPage(ctx, f, func(page []audit.Record) (bool, error) {
		recs = append(recs, page...)
		return *all || len(recs) < *limit, nil
	})
	if err != nil {
		return err
	}
	if !*all && len(recs) > *limit {
		recs = recs[:*limit]
	}
	if *follow {
		// Oldest first, so that a tail reads in order.
		for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
			recs[i], recs[j] = recs[j], recs[i]
		}
	}
	if err := out.print(recs); err != nil {
		return err
	}
	if !*follow {
		return out.flush()
	}
	if err := out.flush(); err != nil {
		return err
	}
	return followRecords(ctx, c, f, recs, *every, out)
}

// followRecords polls for records newer than those printed and prints
// them oldest first, until ctx is done.
func followRecords(ctx context.Context, c *client.Client, f store.Filter, printed []audit.Record, every time.Duration, out *recordPrinter) error {
	seen := map[string]bool{}
	var newest time.Time
	for _, r := range printed {
		seen[r.ID] = true
		if r.Start.After(newest) {
			newest = r.Start
		}
	}
	f.Cursor, f.Limit = "", 1000
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !newest.IsZero() {
			f.Since = newest
		}
		page, err := c.Records(ctx, f)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintln(Stderr, "promptrail query --follow:", termsafe.String(err.Error()))
			continue
		}
		var fresh []audit.Record
		for i := len(page.Records) - 1; i >= 0; i-- {
			r := page.Records[i]
			if seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			fresh = append(fresh, r)
			if r.Start.After(newest) {
				newest = r.Start
			}
		}
		if err := out.print(fresh); err != nil {
			return err
		}
		if err := out.flush(); err != nil {
			return err
		}
	}
}

type recordPrinter struct {
	w             io.Writer
	tw            *tabwriter.Writer
	json, jsonl   bool
	headerPrinted bool
	buf           []audit.Record
}

func newRecordPrinter(w io.Writer, asJSON, asJSONL bool) *recordPrinter {
	return &recordPrinter{w: w, json: asJSON, jsonl: asJSONL, tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

func (p *recordPrinter) print(recs []audit.Record) error {
	switch {
	case p.json:
		p.buf = append(p.buf, recs...)
		return nil
	case p.jsonl:
		for i := range recs {
			if err := writeJSON(p.w, &recs[i], false); err != nil {
				return err
			}
		}
		return nil
	}
	if !p.headerPrinted {
		fmt.Fprintln(p.tw, "TIME\tID\tWORKLOAD\tMODEL\tACTION\tSTATUS\tFINDINGS\tPROMPT")
		p.headerPrinted = true
	}
	for i := range recs {
		r := &recs[i]
		row := []string{r.Start.Local().Format("2006-01-02 15:04:05"), r.ID, dash(workloadName(r.Workload)), dash(r.Request.Model),
			string(r.Decision.Action), status(r), dash(findings(r.Findings)), oneLine(prompt(r), promptWidth(r))}
		// Every field comes from a workload or an agent: escaped, so that
		// none can move the cursor, hide or forge a row (tabs included,
		// which would shift the columns).
		for j := range row {
			row[j] = termsafe.String(row[j])
		}
		fmt.Fprintln(p.tw, strings.Join(row, "\t"))
	}
	return nil
}

// writeJSON writes v as a line of JSON (indented if indent), with the
// characters that a terminal may act on escaped (termsafe.JSON): the same
// JSON, safe to print and to cat from a file later.
func writeJSON(w io.Writer, v any, indent bool) error {
	var b []byte
	var err error
	if indent {
		b, err = json.MarshalIndent(v, "", "  ")
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(append(termsafe.JSON(b), '\n'))
	return err
}

func (p *recordPrinter) flush() error {
	if p.json {
		if p.buf == nil {
			p.buf = []audit.Record{}
		}
		err := writeJSON(p.w, p.buf, true)
		p.buf = nil
		return err
	}
	return p.tw.Flush()
}

func workloadName(w audit.Workload) string {
	switch {
	case w.Pod != "":
		return w.Namespace + "/" + w.Pod
	case w.Identity != "":
		return w.Identity
	case w.Comm != "":
		return fmt.Sprintf("%s (pid %d)", w.Comm, w.PID)
	}
	return w.Kind
}

func status(r *audit.Record) string {
	s := "-"
	if r.Response != nil {
		s = fmt.Sprint(r.Response.Status)
	}
	if r.Incomplete {
		s += " incomplete"
	}
	return s
}

func findings(fs []audit.Finding) string {
	var names []string
	for _, f := range fs {
		names = append(names, fmt.Sprintf("%s×%d", f.Rule, f.Count))
	}
	return strings.Join(names, ",")
}

// prompt is the last user message, or the prompt, input or body.
// promptWidth is how much of the PROMPT column a row shows: a connection
// record's summary is short and whole.
func promptWidth(r *audit.Record) int {
	if r.Kind == audit.KindConnection {
		return 120
	}
	return 60
}

func prompt(r *audit.Record) string {
	if r.Kind == audit.KindConnection {
		// No content: say where it went and why it was not decrypted.
		c := &r.Connection
		return fmt.Sprintf("[connection %s %s sni=%q]", c.OrigDst, r.Decision.Rule, c.SNI)
	}
	q := &r.Request
	for i := len(q.Messages) - 1; i >= 0; i-- {
		if q.Messages[i].Role == "user" && q.Messages[i].Content != "" {
			return q.Messages[i].Content
		}
	}
	switch {
	case q.Prompt != "":
		return q.Prompt
	case len(q.Input) > 0:
		return q.Input[len(q.Input)-1]
	}
	return q.Body
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return dash(s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

const exportSummary = `Exports audit records from the collector as JSON lines, one record per
line, newest first: every record that matches the filters, page after page.`

func runExport(ctx context.Context, args []string) error {
	fs := newFlagSet("export", exportSummary)
	cf := addClientFlags(fs)
	ff := addFilterFlags(fs)
	output := fs.String("output", "-", "`file` to write (- for standard output)")
	if err := settings.Parse(fs, args, "config"); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	w := Stdout
	if *output != "-" {
		file, err := os.OpenFile(*output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("--output: %w", err)
		}
		defer file.Close()
		w = file
	}
	f.Limit = 1000
	n := 0
	err = c.EachPage(ctx, f, func(page []audit.Record) (bool, error) {
		for i := range page {
			if err := writeJSON(w, &page[i], false); err != nil {
				return false, fmt.Errorf("writing the export: %w", err)
			}
		}
		n += len(page)
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("export stopped after %d records: %w", n, err)
	}
	fmt.Fprintf(Stderr, "exported %d records\n", n)
	return nil
}

const verifySummary = `Asks the collector to verify its store: every record against its hash and
its place in the agent's chain, and the Merkle log against its signed
checkpoint. Prints what fails, naming the record, and exits non-zero if
anything does.

With --record ID, verifies that one record here, on this machine: its
inclusion proof against the collector's signed checkpoint, checked with the
checkpoint key given by --checkpoint-key (pin it) or fetched from the
collector.`

func runVerify(ctx context.Context, args []string) error {
	fs := newFlagSet("verify", verifySummary)
	cf := addClientFlags(fs)
	id := fs.String("record", "", "verify the inclusion proof of this record `id` locally")
	key := fs.String("checkpoint-key", "", "note verifier `key` of the collector's checkpoints (default: fetched from the collector)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := settings.Parse(fs, args, "config"); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if *id != "" {
		return verifyRecord(ctx, c, *id, *key)
	}
	rep, err := c.Verify(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := writeJSON(Stdout, rep, true); err != nil {
			return err
		}
	} else {
		printReport(rep)
	}
	if !rep.OK {
		return fmt.Errorf("verify: %d problems", len(rep.Problems))
	}
	return nil
}

func printReport(rep store.Report) {
	fmt.Fprintf(Stdout, "records: %d, log leaves: %d (expired by retention: %d), tree size %d, root %s\n",
		rep.Records, rep.Leaves, rep.Expired, rep.TreeSize, termsafe.String(rep.Root))
	for _, p := range rep.Problems {
		where := p.ID
		if p.Agent != "" {
			where += fmt.Sprintf(" (agent %s, seq %d)", p.Agent, p.Seq)
		}
		// A problem names what a (perhaps hostile) agent sent.
		fmt.Fprintf(Stdout, "FAIL %s: %s: %s\n", termsafe.String(string(p.Kind)), termsafe.String(where), termsafe.String(p.Detail))
	}
	if rep.OK {
		fmt.Fprintln(Stdout, "OK: every record matches its hash, its chain and the signed Merkle log")
	}
}

func verifyRecord(ctx context.Context, c *client.Client, id, key string) error {
	if key == "" {
		k, err := c.VerifierKey(ctx)
		if err != nil {
			return err
		}
		key = k
		fmt.Fprintln(Stderr, "checkpoint key fetched from the collector; pin it with --checkpoint-key:", key)
	}
	rp, err := c.Record(ctx, id)
	if err != nil {
		return err
	}
	cp, err := client.VerifyInclusion(rp.Record, rp.Proof, key)
	if err != nil {
		return fmt.Errorf("verify: record %s: %w", id, err)
	}
	fmt.Fprintf(Stdout, "OK: record %s is leaf %d of the log %q of size %d signed by %s\n", termsafe.String(id), rp.Proof.LeafIndex, cp.Origin, cp.Size, termsafe.String(keyName(key)))
	return nil
}

func keyName(key string) string {
	name, _, _ := strings.Cut(key, "+")
	return name
}
