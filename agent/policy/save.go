package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SaveFile writes a policy file whole: through a synced file beside it,
// renamed over it, so that a crash leaves the old file or the new one.
func SaveFile(path string, raw []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("saving the policy: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(raw)
	if err = errors.Join(err, tmp.Sync(), tmp.Close()); err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("saving the policy: %w", err)
	}
	return nil
}
