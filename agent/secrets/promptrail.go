package secrets

import (
	"regexp"

	"github.com/zricethezav/gitleaks/v8/config"
)

// promptrailSpecs are the rules that gitleaks' default configuration lacks
// (source "promptrail"): credentials that people paste into prompts rather
// than commit. Their regexes are written for this package.
func promptrailSpecs() []ruleSpec {
	placeholders := placeholderAllowlist()
	headers := append(placeholderAllowlist(), allowlistOf("names", `^[A-Z_]+$`))
	specs := []ruleSpec{{
		id:          "connection-url-password",
		description: "Password in the user information of a connection URL (postgres://user:password@host, mongodb+srv://, redis://, amqp://, https://, ...)",
		regex: `(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|https?|s?ftps?|ldaps?|smtps?|mssql|sqlserver|clickhouse|nats|neo4j(?:\+s)?)` +
			`://[^\s:@/?#'"\x60<>{}]{0,128}:([^\s/?#'"\x60<>]{1,256})@[^\s@/?#'"\x60<>:]`,
		secretGroup: 1,
		// "://" rather than the schemes: URLs without user information are
		// common, and the filter rejects them at the first '/' or '@'.
		keywords:   []string{"://"},
		allowlists: placeholders,
	}, {
		id:          "authorization-header",
		description: "Credentials in an Authorization header (Bearer, Basic, Token) pasted into text",
		regex: `(?i)\b(?:proxy-)?authorization\b["']?[ \t]*[:=][ \t]*["']?(?:bearer|basic|token|bot|apikey|api-key)[ \t]+` +
			`([A-Za-z0-9\-._~+/]{8,}={0,2})`,
		secretGroup: 1,
		keywords:    []string{"authorization"},
		allowlists:  headers,
	}, {
		id:          "bearer-token",
		description: "A bearer token after the word Bearer",
		regex:       `(?i)\bbearer[ \t]+([A-Za-z0-9\-._~+/]{20,}={0,2})`,
		secretGroup: 1,
		entropy:     3.5,
		keywords:    []string{"bearer"},
		allowlists:  headers,
	}, {
		id:          "service-account-private-key",
		description: `Private key of a cloud service account in JSON ("private_key": "-----BEGIN PRIVATE KEY-----\n..."), escaped or decoded`,
		regex: `(?i)"?private_key"?[ \t]*:[ \t]*"(-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY-----` +
			`(?:\\[nrt]|[A-Za-z0-9+/=\s])+?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY-----(?:\\[nrt]|\s)*)"`,
		secretGroup: 1,
		keywords:    []string{"private_key"},
	}, {
		id: "private-key-block",
		description: "Body of a PEM private key, with real or escaped (\\n) line breaks, " +
			"also when its END line is missing",
		regex: `(?i)-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----` +
			`((?:\\[nrt]|\s)*(?:(?:Proc-Type|DEK-Info):[^\n\\]*(?:\\n|\n)(?:\\[nrt]|\s)*)*` +
			`[A-Za-z0-9+/=]{16}(?:[A-Za-z0-9+/=]|\\r|\\n|\r|\n)*)`,
		secretGroup: 1,
		keywords:    []string{"-----begin"},
	}}
	for i := range specs {
		specs[i].source = sourcePromptrail
	}
	return specs
}

// allowlistOf returns an allowlist of regexes that apply to the secret.
func allowlistOf(description string, regexes ...string) *config.Allowlist {
	a := &config.Allowlist{Description: description}
	for _, s := range regexes {
		a.Regexes = append(a.Regexes, regexp.MustCompile(s))
	}
	if err := a.Validate(); err != nil {
		panic(err) // constant allowlists
	}
	return a
}
