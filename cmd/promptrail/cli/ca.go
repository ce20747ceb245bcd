package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/promptrail/promptrail/agent/tlsca"
	"github.com/promptrail/promptrail/internal/settings"
)

const caSummary = `Prints the CA certificate (PEM) that clients must trust, creating the node
CA in --data-dir if it does not exist yet, so it can be distributed before
the agent first starts.`

// caHowTo says how to make common clients trust the CA.
const caHowTo = `Make clients trust it (save the PEM above as promptrail-ca.crt):
  system bundle (Debian/Ubuntu): cp promptrail-ca.crt /usr/local/share/ca-certificates/ && update-ca-certificates
  system bundle (RHEL/Fedora):   cp promptrail-ca.crt /etc/pki/ca-trust/source/anchors/ && update-ca-trust
  Go, curl, OpenSSL clients:     SSL_CERT_FILE=/path/to/bundle-with-promptrail-ca.crt (replaces the bundle)
  Node.js:                       NODE_EXTRA_CA_CERTS=/path/to/promptrail-ca.crt (adds to the bundle)
  Python requests/httpx:         REQUESTS_CA_BUNDLE=/path/to/bundle-with-promptrail-ca.crt (replaces the bundle)
  Java:                          keytool -importcert -cacerts -alias promptrail -file promptrail-ca.crt
  Kubernetes: mount it from a ConfigMap and set the variables above in the pods.`

func runCA(ctx context.Context, args []string) error {
	fs := newFlagSet("ca", caSummary)
	dataDir := fs.String("data-dir", "/var/lib/promptrail", "the agent's data `directory`, where the node CA lives")
	caCert := fs.String("ca-cert", "", "print this CA certificate `file` instead (what the agent's --ca-cert names)")
	quiet := fs.Bool("quiet", false, "print only the PEM, not how to trust it")
	if err := settings.Parse(fs, args, ""); err != nil {
		return err
	}
	var pem []byte
	if *caCert != "" {
		b, err := os.ReadFile(*caCert)
		if err != nil {
			return fmt.Errorf("reading CA certificate: %w", err)
		}
		pem = b
	} else {
		ca, err := tlsca.LoadOrCreate(*dataDir)
		if err != nil {
			return err
		}
		pem = ca.CertPEM()
	}
	fmt.Fprint(Stdout, string(pem))
	if !*quiet {
		fmt.Fprintln(Stderr, caHowTo)
	}
	return nil
}
