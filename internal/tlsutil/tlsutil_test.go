package tlsutil

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadCARefusesFilesWithoutCertificates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(p); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("got %v", err)
	}
	if _, err := LoadCA(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestIsCertError(t *testing.T) {
	if !IsCertError(fmt.Errorf("dial: %w", x509.UnknownAuthorityError{})) {
		t.Fatal("an unknown authority is a certificate error")
	}
	if IsCertError(errors.New("connection refused")) {
		t.Fatal("a refused connection is not")
	}
}
