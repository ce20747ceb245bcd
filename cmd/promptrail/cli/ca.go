package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/promptrail/promptrail/agent"
	"github.com/promptrail/promptrail/agent/tlsca"
	"github.com/promptrail/promptrail/internal/settings"
)

const caSummary = `Prints the CA certificates (PEM) that clients must trust: the node CA in
--data-dir and, while a rotation is under way, the next or the old one.
The agent creates its CA on first start; --init creates it now, so it can
be distributed before the agent first starts. A --data-dir without a CA is
an error, never a new CA.

A new CA is name-constrained to the host names of --target (the agent's):
its key signs nothing else that clients accept.

Rotation, one step at a time (restart the agent after activate):
  --rotate prepare   create the next CA; the bundle printed holds both: give it to clients
  --rotate activate  the next CA signs from the agent's next start; the old stays in the bundle
  --rotate retire    drop the old CA from the bundle once no client or agent needs it`

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
	fs.String("config", "", "the agent's YAML settings `file`: its data-dir, ca-cert, target and ca-unconstrained apply, the rest is skipped")
	dataDir := fs.String("data-dir", "/var/lib/promptrail", "the agent's data `directory`, where the node CA lives")
	caCert := fs.String("ca-cert", "", "print this CA certificate `file` instead (what the agent's --ca-cert names)")
	quiet := fs.Bool("quiet", false, "print only the PEM, not how to trust it")
	initCA := fs.Bool("init", false, "create the node CA in --data-dir if it has none")
	rotate := fs.String("rotate", "", "rotation `step`: prepare, activate or retire (see above)")
	targets := settings.NewList(agent.DefaultTarget)
	fs.Var(targets, "target", "`host[:port]` the agent intercepts, repeatable: a CA made by --init or --rotate prepare may sign these names only")
	unconstrained := fs.Bool("ca-unconstrained", false, "make --init and --rotate prepare create a CA without name constraints (for clients that reject them; a stolen key then signs for any site)")
	if err := settings.ParseShared(fs, args, "config"); err != nil {
		return err
	}
	if *caCert != "" {
		if *initCA || *rotate != "" {
			return errors.New("--init and --rotate manage the node CA in --data-dir, not a --ca-cert file")
		}
		b, err := os.ReadFile(*caCert)
		if err != nil {
			return fmt.Errorf("reading CA certificate: %w", err)
		}
		return printCA(b, describeFile(b), *quiet)
	}
	if *initCA && *rotate != "" {
		return errors.New("--init and --rotate are separate steps: give one")
	}
	names, err := agent.TargetNames(targets.Values())
	if err != nil {
		return err
	}
	c := tlsca.Constraints{Names: names, Unconstrained: *unconstrained}
	note := ""
	switch *rotate {
	case "":
		if *initCA {
			created, err := tlsca.Init(*dataDir, c)
			if err != nil {
				return err
			}
			if !created {
				note = fmt.Sprintf("%s already holds a CA; --init left it as it is.\n", *dataDir)
			}
		}
	case "prepare":
		err = tlsca.PrepareRotation(*dataDir, c)
	case "activate":
		err = tlsca.ActivateRotation(*dataDir)
	case "retire":
		err = tlsca.RetireOld(*dataDir)
	default:
		return fmt.Errorf("--rotate %q: want prepare, activate or retire", *rotate)
	}
	if errors.Is(err, tlsca.ErrNoCA) {
		return noCAError(*dataDir)
	}
	if err != nil {
		return err
	}
	b, err := tlsca.ReadBundle(*dataDir)
	if errors.Is(err, tlsca.ErrNoCA) {
		return noCAError(*dataDir)
	}
	if err != nil {
		return err
	}
	return printCA(b.PEM(), note+describeBundle(b, *dataDir), *quiet)
}

func noCAError(dir string) error {
	return fmt.Errorf("%s holds no CA (no %s): is --data-dir right? The agent creates its CA there on first start; "+
		"to create it now, run `promptrail ca --init --data-dir %[1]s` with the agent's --target flags", dir, tlsca.CertFile)
}

func printCA(pemBytes []byte, about string, quiet bool) error {
	fmt.Fprint(Stdout, string(pemBytes))
	if !quiet {
		fmt.Fprint(Stderr, about)
		fmt.Fprintln(Stderr, caHowTo)
	}
	return nil
}

// describeBundle says what each CA in b may sign and where a rotation
// stands.
func describeBundle(b tlsca.Bundle, dir string) string {
	var s strings.Builder
	s.WriteString(describeCA(b.Current))
	switch {
	case b.Next != nil:
		fmt.Fprintf(&s, "Rotation prepared: the bundle also holds the next CA. %sGive clients this bundle, then run "+
			"`promptrail ca --data-dir %s --rotate activate` and restart the agent.\n", describeCA(b.Next), dir)
	case b.Old != nil:
		fmt.Fprintf(&s, "Rotation active: the bundle also holds the old CA %q, whose key is gone. Once every agent runs with "+
			"the new CA, run `promptrail ca --data-dir %s --rotate retire`.\n", b.Old.Subject.CommonName, dir)
	}
	return s.String()
}

func describeFile(b []byte) string {
	block, _ := pem.Decode(b)
	if block == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return ""
	}
	return describeCA(cert)
}

func describeCA(c *x509.Certificate) string {
	if len(c.PermittedDNSDomains) == 0 {
		return fmt.Sprintf("CA %q has no name constraints: its key can sign for any site (see README: CA).\n", c.Subject.CommonName)
	}
	return fmt.Sprintf("CA %q may sign only %s (and their subdomains).\n", c.Subject.CommonName, strings.Join(c.PermittedDNSDomains, ", "))
}
