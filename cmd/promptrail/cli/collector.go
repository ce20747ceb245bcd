package cli

import (
	"context"
	"errors"
	"time"

	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/store"
	"github.com/promptrail/promptrail/internal/settings"
)

const collectorSummary = `Runs the collector: takes record batches from agents (POST /v1/ingest),
keeps them in a Badger store in --data-dir with per-agent hash chains and a
Merkle log whose signed checkpoints it publishes, and answers queries
(GET /v1/records, /v1/records/{id}, /v1/verify), /metrics and /healthz.

Callers present bearer tokens listed in --tokens-file (re-read within 10s
when it changes), one per line:
  <role> <name> <token>     role: agent (ingest), reader (query, verify,
                            export) or admin (both); an agent token's name
                            is the agent ID it may ingest for, or *.`

func runCollector(ctx context.Context, args []string) error {
	fs := newFlagSet("collector", collectorSummary)
	fs.String("config", "", "YAML `file` of settings, keyed by flag name")
	dataDir := fs.String("data-dir", "/var/lib/promptrail-collector", "`directory` of the store and the checkpoint signing key")
	listen := fs.String("listen", "127.0.0.1:7070", "`ip:port` of the API")
	tokens := fs.String("tokens-file", "", "`file` of the bearer tokens accepted (required)")
	retention := &durationFlag{}
	// No default retention: deleting audit evidence is the operator's call.
	fs.Var(retention, "retention", "drop records older than this `long` (whole days at a time), e.g. 2160h (default: keep forever)")
	every := &durationFlag{}
	fs.Var(every, "checkpoint-interval", "sign a checkpoint of the Merkle log this `often`, also when idle (default 30s)")
	memLimit := fs.String("memory-limit", "1GiB", "soft memory `limit` of the Go runtime (GOMEMLIMIT wins when set); Badger's caches are sized below it")
	approvalTTL := fs.Duration("approval-ttl", collector.DefaultApprovalTTL, "how `long` a request held for approval waits for a decision before it expires and can no longer be approved")
	webhook := fs.String("approval-webhook", "", "`URL` the collector POSTs a signed, Slack-compatible JSON message to when a request starts waiting for approval (default: none)")
	webhookSecret := fs.String("approval-webhook-secret-file", "", "`file` of the secret that signs the approval webhook's calls (required with --approval-webhook)")
	skew := fs.Duration("max-clock-skew", store.DefaultMaxClockSkew, "reject records whose start is further than this `long` from the collector's clock, either way (negative: no check)")
	var lim collector.ServerLimits
	fs.DurationVar(&lim.ReadHeaderTimeout, "read-header-timeout", collector.DefaultReadHeaderTimeout, "close a connection whose request headers take `longer`")
	fs.DurationVar(&lim.ReadTimeout, "read-timeout", collector.DefaultReadTimeout, "close a connection whose whole request (a batch) takes `longer`")
	fs.DurationVar(&lim.IdleTimeout, "idle-timeout", collector.DefaultIdleTimeout, "close a kept-alive connection idle this `long`")
	fs.IntVar(&lim.MaxHeaderBytes, "max-header-bytes", collector.DefaultMaxHeaderBytes, "largest request headers, in `bytes`")
	fs.IntVar(&lim.MaxRequestsPerClient, "max-requests-per-client", collector.DefaultMaxRequestsPerClient, "requests one client address may have in flight (`n`); more get 429")
	lf := addLogFlags(fs)
	if err := settings.Parse(fs, args, "config"); err != nil {
		return err
	}
	logger, err := lf.logger()
	if err != nil {
		return err
	}
	if err := setMemoryLimit(*memLimit); err != nil {
		return err
	}
	if *tokens == "" {
		return errors.New("--tokens-file is required: the collector accepts no unauthenticated calls")
	}
	a, err := auth.OpenTokens(*tokens)
	if err != nil {
		return err
	}
	hook := collector.WebhookConfig{URL: *webhook}
	switch {
	case *webhook != "" && *webhookSecret == "":
		return errors.New("--approval-webhook needs --approval-webhook-secret-file: its calls are signed")
	case *webhook != "":
		if hook.Secret, err = collector.ReadWebhookSecret(*webhookSecret); err != nil {
			return err
		}
	}
	go a.Watch(ctx, tokensReload, logger)
	return collector.Run(ctx, collector.Config{Webhook: hook,
		DataDir: *dataDir, Listen: *listen, Auth: a, Retention: retention.d,
		CheckpointEvery: every.d, MaxClockSkew: *skew, ApprovalTTL: *approvalTTL, Server: lim, Logger: logger,
	})
}

// tokensReload is how often the collector looks for a changed tokens
// file: rotating or revoking a token needs no restart.
const tokensReload = 10 * time.Second
