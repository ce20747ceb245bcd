package tlsca

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The CA's files in the data directory. During a rotation the next CA
// waits in NextCertFile and NextKeyFile while clients learn to trust it;
// once it signs, the certificate it replaced stays in OldCertFile (its key
// is deleted) until clients may forget it.
const (
	CertFile     = "ca.crt"
	KeyFile      = "ca.key"
	NextCertFile = "ca.next.crt"
	NextKeyFile  = "ca.next.key"
	OldCertFile  = "ca.old.crt"
)

// ErrNoCA is returned for a directory that holds no CA.
var ErrNoCA = errors.New("no CA")

// LoadOrCreate loads the CA in dir, or creates one there with constraints
// c (key file mode 0600) on first start.
func LoadOrCreate(dir string, c Constraints) (*CA, error) {
	if _, err := Init(dir, c); err != nil {
		return nil, err
	}
	return LoadDir(dir)
}

// LoadDir loads the CA in dir: an error wrapping ErrNoCA if there is none.
func LoadDir(dir string) (*CA, error) {
	if err := hasCA(dir); err != nil {
		return nil, err
	}
	return Load(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
}

// Init creates a CA with constraints c in dir unless dir holds one, and
// reports whether it created it.
func Init(dir string, c Constraints) (created bool, err error) {
	if err := hasCA(dir); !errors.Is(err, ErrNoCA) {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("tlsca: creating %s: %w", dir, err)
	}
	if err := writeCA(dir, CertFile, KeyFile, c); err != nil {
		return false, err
	}
	return true, nil
}

func hasCA(dir string) error {
	_, err := os.Stat(filepath.Join(dir, CertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tlsca: %s holds no CA (no %s): %w", dir, CertFile, ErrNoCA)
	}
	if err != nil {
		return fmt.Errorf("tlsca: %w", err)
	}
	return nil
}

// writeCA writes a new CA, the key first: the certificate is what marks a
// CA as present, so a crash between the two leaves no CA, not a broken one.
func writeCA(dir, certFile, keyFile string, c Constraints) error {
	certPEM, keyPEM, err := newCA(time.Now(), c)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, keyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("tlsca: writing CA key: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, certFile), certPEM, 0o644); err != nil {
		return fmt.Errorf("tlsca: writing CA certificate: %w", err)
	}
	return nil
}

// Bundle is what clients of a node should trust: the CA that signs, and
// during a rotation the next or the old one.
type Bundle struct {
	Current, Next, Old *x509.Certificate
}

// ReadBundle reads the CA certificates in dir (no key is needed): an error
// wrapping ErrNoCA if there is none.
func ReadBundle(dir string) (Bundle, error) {
	var b Bundle
	if err := hasCA(dir); err != nil {
		return b, err
	}
	for _, f := range []struct {
		name string
		to   **x509.Certificate
	}{{CertFile, &b.Current}, {NextCertFile, &b.Next}, {OldCertFile, &b.Old}} {
		cert, err := readCert(filepath.Join(dir, f.name))
		if errors.Is(err, fs.ErrNotExist) && f.name != CertFile {
			continue
		}
		if err != nil {
			return b, err
		}
		*f.to = cert
	}
	return b, nil
}

// PEM returns the bundle's certificates, the current one first.
func (b Bundle) PEM() []byte {
	var out []byte
	for _, c := range []*x509.Certificate{b.Current, b.Next, b.Old} {
		if c != nil {
			out = append(out, pemCert(c.Raw)...)
		}
	}
	return out
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsca: reading CA certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("tlsca: %s holds no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tlsca: parsing %s: %w", path, err)
	}
	return cert, nil
}

// PrepareRotation creates the next CA in dir with constraints c. The agent
// goes on signing with the current one; clients should now be given the
// bundle, which holds both. One rotation runs at a time.
func PrepareRotation(dir string, c Constraints) error {
	b, err := ReadBundle(dir)
	if err != nil {
		return err
	}
	switch {
	case b.Next != nil:
		return fmt.Errorf("tlsca: a rotation is already prepared (%s): activate it, or delete %s and %s to start over",
			filepath.Join(dir, NextCertFile), NextCertFile, NextKeyFile)
	case b.Old != nil:
		return fmt.Errorf("tlsca: the last rotation is not finished: retire %s first", filepath.Join(dir, OldCertFile))
	}
	return writeCA(dir, NextCertFile, NextKeyFile, c)
}

// ActivateRotation makes the prepared CA the one that signs (from the
// agent's next start) and keeps the replaced certificate in OldCertFile,
// deleting its key. Run again after a crash, it completes the step.
func ActivateRotation(dir string) error {
	if err := hasCA(dir); err != nil {
		return err
	}
	nextCert, nextKey := filepath.Join(dir, NextCertFile), filepath.Join(dir, NextKeyFile)
	if _, err := os.Stat(nextKey); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tlsca: no rotation is prepared in %s (no %s)", dir, NextKeyFile)
	}
	// The next certificate is still there unless a crash came after it
	// was moved into place; only its key is left to move then.
	if _, err := os.Stat(nextCert); err == nil {
		if _, err := Load(nextCert, nextKey); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(dir, OldCertFile)); errors.Is(err, fs.ErrNotExist) {
			cur, err := os.ReadFile(filepath.Join(dir, CertFile))
			if err != nil {
				return fmt.Errorf("tlsca: %w", err)
			}
			if err := writeAtomic(filepath.Join(dir, OldCertFile), cur, 0o644); err != nil {
				return fmt.Errorf("tlsca: keeping the old CA certificate: %w", err)
			}
		}
		if err := os.Rename(nextCert, filepath.Join(dir, CertFile)); err != nil {
			return fmt.Errorf("tlsca: %w", err)
		}
	}
	if err := os.Rename(nextKey, filepath.Join(dir, KeyFile)); err != nil {
		return fmt.Errorf("tlsca: %w", err)
	}
	return syncDir(dir)
}

// RetireOld removes the replaced CA certificate from the bundle, once
// clients trust the current one and no agent signs with the old.
func RetireOld(dir string) error {
	b, err := ReadBundle(dir)
	if err != nil {
		return err
	}
	if b.Next != nil {
		return fmt.Errorf("tlsca: a prepared rotation is not active yet: activate it before retiring")
	}
	err = os.Remove(filepath.Join(dir, OldCertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tlsca: no old CA to retire in %s (no %s)", dir, OldCertFile)
	}
	if err != nil {
		return fmt.Errorf("tlsca: %w", err)
	}
	return syncDir(dir)
}

// writeAtomic writes data to path through a synced temporary file, so that
// path holds the old contents or the new, never a part.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("tlsca: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("tlsca: syncing %s: %w", dir, err)
	}
	return nil
}
