package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/promptrail/promptrail/agent/spool"
	"github.com/promptrail/promptrail/internal/settings"
)

const rejectedSummary = `Lists the records the collector refused for good (invalid, too large, a
clock too far off), which the agent keeps aside in its spool, never sending
them again, while the collector's chain shows each as a gap. Stop the agent
first: the spool is opened read-only, and nothing in it changes.`

func runRejected(ctx context.Context, args []string) error {
	fs := newFlagSet("rejected", rejectedSummary)
	dataDir := fs.String("data-dir", "/var/lib/promptrail", "the agent's data `directory` (its spool is DIR/spool)")
	jsonl := fs.Bool("jsonl", false, "print each as a JSON line with the whole sealed record")
	lf := addLogFlags(fs)
	if err := settings.Parse(fs, args, ""); err != nil {
		return err
	}
	logger, err := lf.logger()
	if err != nil {
		return err
	}
	recs, err := spool.ReadRejected(ctx, filepath.Join(*dataDir, "spool"), logger)
	if err != nil {
		return err
	}
	if *jsonl {
		enc := json.NewEncoder(Stdout)
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tID\tREFUSED\tCODE\tREASON")
	for _, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Seq, r.ID, r.Time.Format("2006-01-02T15:04:05Z"), r.Code, r.Reason)
	}
	return tw.Flush()
}
