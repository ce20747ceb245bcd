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
	}, {
		// Azure's storage connection strings carry the account key as
		// AccountKey=<key>; a storage account key is 512 bits, which is 88
		// base64 characters ending in "==" (Microsoft Learn, "Configure
		// Azure Storage connection strings" and "Manage storage account
		// access keys").
		id:          "azure-storage-account-key",
		description: "Azure storage account key in a connection string (AccountKey=<88 base64 characters>)",
		regex:       `(?i)\baccountkey[ \t]*=[ \t]*([A-Za-z0-9+/]{86}==)`,
		secretGroup: 1,
		keywords:    []string{"accountkey"},
		allowlists:  placeholders,
	}, {
		// An AWS secret access key is 40 characters of base64's alphabet
		// (AWS IAM User Guide, "Managing access keys": the example
		// wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY). Alone it looks like
		// any other base64, so the rule needs the name it is assigned to:
		// AWS_SECRET_ACCESS_KEY, aws_secret_access_key (the CLI's
		// credentials file), SecretAccessKey (the JSON of sts and the
		// SDKs).
		id:          "aws-secret-access-key",
		description: "AWS secret access key assigned to its name (AWS_SECRET_ACCESS_KEY=, aws_secret_access_key =, \"SecretAccessKey\": )",
		regex: `(?i)(?:aws)?[_.-]?secret[_.-]?access[_.-]?key["']?[ \t]*(?::=|=>|[:=])[ \t]*["']?` +
			`([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)`,
		secretGroup: 1,
		entropy:     3.5,
		keywords:    []string{"secret"},
		allowlists:  placeholders,
	}, secretAssignmentSpec()}
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

// secretAssignmentSpec is the rule for a high-entropy value assigned to a
// name that says it is a secret (.env, YAML, JSON, key=value logs,
// command-line flags): what gitleaks' generic-api-key misses, which is
// values with punctuation (passwords, base64 with '+' or '/'); values of
// word characters alone are generic-api-key's, and left to it, because in
// source code they are mostly identifiers (PrivateKey: testRSA2048Key).
// Source code assigns such names all the time, to expressions rather than
// secrets (token := getToken(), password = os.Getenv("X"), secretKey:
// props.secretKey), so the value must be a single word of at least 12
// bytes with a letter, a digit and punctuation, over an entropy floor, and
// not an identifier path, a file path, a URL or a placeholder.
func secretAssignmentSpec() ruleSpec {
	return ruleSpec{
		id:          "generic-secret-assignment",
		description: "High-entropy value assigned to a name that says secret, credential, key, token or password",
		regex: `(?i)[\w.-]{0,40}?(?:secret|credential|passw(?:or)?d|token|key)[\w.-]{0,20}["']?[ \t]*(?::=|=>|[:=])[ \t]*` +
			`(?:"([^"\s\\]{12,256})"|'([^'\s\\]{12,256})'|([^\s"'\x60,;(){}\[\]<>\\]{12,256}))`,
		entropy:  3.5,
		keywords: []string{"secret", "credential", "passwd", "password", "token", "key"},
		allowlists: []*config.Allowlist{
			allowlistOf("placeholders", placeholder),
			allowlistOf("not a secret's shape",
				`^[\w.-]+$`,    // word characters only: identifiers, hex; generic-api-key has the rest
				`^[^0-9]*$`,    // no digit: words
				`^[^A-Za-z]*$`, // no letter: numbers, dates, versions
				`^[A-Za-z_$][\w$]*(?:(?:\.|::|->)[A-Za-z_$][\w$]*)+$`, // an identifier path: props.secretKey
				`^(?:~|\.{1,2})?/[\w.@-]+(?:/[\w.@-]*)*$`,             // a file path
				`^[a-z][a-z0-9+.-]*://`,                               // a URL (connection-url-password has passwords)
				`^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)+$`,                  // a resource name: app-credentials-v2
				`^\$\{|^\{\{|^%\(|^<`,                                 // a template
				`^[\w.]+(?:\*[\w.]+)+$`,                               // a product: 2*maxConcurrency
				`[\w.]=[^=]`,                                          // key=value pairs: Key=int32/Elem=bigType
				`^\[MASKED:[a-z0-9-]+:[0-9a-f]{8}\]$`,                 // a marker: what was masked already
			),
		},
	}
}
