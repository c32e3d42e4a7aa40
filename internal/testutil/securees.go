package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
)

// SecureES is the local stack's secured Elasticsearch node: HTTPS with a CA
// the stack generates, authentication on, file-realm users (the test
// distribution cannot hold native users or API keys: see
// deploy/local/elasticsearch.sh). `make up` starts it and writes these
// values to .local/es-secure.env.
type SecureES struct {
	URL    string // https://127.0.0.1:9250
	CACert string // PEM file of the CA that signed the node's certificate
	// Username/Password have all rights on tusou-* indices (role
	// tusou_test_all) and cluster monitor.
	Username, Password string
	// NoDeleteUsername/NoDeletePassword may read, create indices and index
	// documents in tusou-* but not delete (role tusou_test_no_delete).
	NoDeleteUsername, NoDeletePassword string
}

// LoadSecureES reads the secured node's settings from TUSOU_SECURE_ES_ENV,
// by default .local/es-secure.env in the repository root.
func LoadSecureES() (SecureES, error) {
	path := os.Getenv("TUSOU_SECURE_ES_ENV")
	if path == "" {
		path = filepath.Join(Root(), ".local", "es-secure.env")
	}
	kv, err := readEnvFile(path)
	if err != nil {
		return SecureES{}, fmt.Errorf("the secured Elasticsearch node is not set up (make up starts it): %w", err)
	}
	s := SecureES{
		URL: kv["TUSOU_SECURE_ES_URL"], CACert: kv["TUSOU_SECURE_ES_CA_CERT"],
		Username: kv["TUSOU_SECURE_ES_USERNAME"], Password: kv["TUSOU_SECURE_ES_PASSWORD"],
		NoDeleteUsername: kv["TUSOU_SECURE_ES_NODELETE_USERNAME"], NoDeletePassword: kv["TUSOU_SECURE_ES_NODELETE_PASSWORD"],
	}
	for k, v := range map[string]string{"URL": s.URL, "CA_CERT": s.CACert, "USERNAME": s.Username, "PASSWORD": s.Password,
		"NODELETE_USERNAME": s.NoDeleteUsername, "NODELETE_PASSWORD": s.NoDeletePassword} {
		if v == "" {
			return SecureES{}, fmt.Errorf("%s: TUSOU_SECURE_ES_%s is missing (make up writes it)", path, k)
		}
	}
	return s, nil
}

// Do sends req to the node as Username (the test's own setup and cleanup),
// trusting CACert.
func (s SecureES) Do(req *http.Request) (*http.Response, error) {
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(s.Username, s.Password)
	return c.Do(req)
}

// Client is an HTTP client that trusts the node's CA and sends no
// credentials of its own.
func (s SecureES) Client() (*http.Client, error) {
	pem, err := os.ReadFile(s.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", s.CACert)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}
