package ldaptest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/testproc"
)

// The directory tree every server has.
const (
	Suffix        = "dc=example,dc=test"
	AdminDN       = "cn=admin,dc=example,dc=test" // the root DN: may do anything
	AdminPassword = "admin-secret"
	BindDN        = "cn=calloutd,dc=example,dc=test" // may read the whole tree
	BindPassword  = "calloutd-secret"
)

// Time limits. Every wait polls every pollEvery and gives up after its limit.
const (
	pollEvery  = 25 * time.Millisecond
	upLimit    = 10 * time.Second // for slapd to answer
	probeLimit = 3 * time.Second  // for one readiness ldapsearch
	cmdLimit   = 20 * time.Second // for one slapadd or ldapadd run
	stopLimit  = 10 * time.Second // for slapd to exit on SIGTERM
	portTries  = 5                // starts on ports taken meanwhile
	logTailLen = 25               // log lines quoted in a failure
)

// tools are the programs and files a server needs, found once.
type tools struct {
	slapd, slapadd, ldapadd, ldapsearch string
	moduleDir                           string // holds back_mdb; "" when built in
	schemaDir                           string // holds core.ldif and the others
	missing                             []string
}

// schemas are the schema LDIFs loaded from tools.schemaDir, in order.
var schemas = []string{"core", "cosine", "nis", "inetorgperson"}

var findTools = sync.OnceValue(func() tools {
	var tl tools
	// slapd and slapadd live in /usr/sbin, which is not in the PATH of
	// ordinary users on Debian.
	sbin := []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/libexec", "/usr/libexec", "/opt/homebrew/sbin"}
	for _, b := range []struct {
		path *string
		name string
	}{{&tl.slapd, "slapd"}, {&tl.slapadd, "slapadd"}, {&tl.ldapadd, "ldapadd"}, {&tl.ldapsearch, "ldapsearch"}} {
		*b.path = lookPath(b.name, sbin)
		if *b.path == "" {
			tl.missing = append(tl.missing, b.name)
		}
	}
	// Debian builds the backends as modules in /usr/lib/ldap; other
	// systems have them elsewhere, or built into slapd.
	for _, d := range []string{"/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap",
		"/usr/libexec/openldap", "/usr/local/libexec/openldap", "/usr/local/lib/openldap"} {
		if exists(filepath.Join(d, "back_mdb.so")) || exists(filepath.Join(d, "back_mdb.la")) {
			tl.moduleDir = d
			break
		}
	}
	for _, d := range []string{"/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema",
		"/opt/homebrew/etc/openldap/schema"} {
		all := true
		for _, s := range schemas {
			all = all && exists(filepath.Join(d, s+".ldif"))
		}
		if all {
			tl.schemaDir = d
			break
		}
	}
	if tl.schemaDir == "" {
		tl.missing = append(tl.missing, "the schema LDIFs ("+strings.Join(schemas, ".ldif, ")+".ldif in /etc/ldap/schema)")
	}
	return tl
})

func lookPath(name string, extra []string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range extra {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p
		}
	}
	return ""
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Need skips the test loudly when slapd, slapadd, ldapadd, ldapsearch or
// OpenLDAP's schema files are missing, or fails it when the environment has
// CI=true. Start calls it itself.
func Need(t testing.TB) {
	t.Helper()
	tl := findTools()
	if len(tl.missing) == 0 {
		return
	}
	msg := "tests against a real OpenLDAP need " + strings.Join(tl.missing, ", ") +
		` (in PATH or /usr/sbin); "make test" as root on Debian installs them (apt-get install slapd ldap-utils, see .ci/deps)`
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("\n\n*** SKIPPED: " + msg + " ***\n")
}

// Options are what a server has beyond the fixed tree.
type Options struct {
	// Entries is LDIF added after start (ldapadd as the root DN), e.g.
	// users under Suffix. Start fails the test if ldapadd fails.
	Entries string
	// TLS: also listen on ldaps:// with a certificate generated for
	// 127.0.0.1 (IP SAN) and "localhost", signed by a generated CA (see
	// CAFile); StartTLS on ldap:// then works too. The certificate also
	// names the machine's host name, which libldap (ldapsearch, ...) checks
	// instead of "localhost" when the URL says ldap://localhost.
	TLS bool
}

// Server is one slapd on 127.0.0.1, with its own directory.
type Server struct {
	dir     string
	confDir string // the cn=config, slapd.d
	log     string // stderr of every run of slapd, in dir
	caFile  string // "" without TLS
	token   string // in the description of Suffix, to know our slapd
	port    int    // ldap://, set by Start (the function) only
	tlsPort int    // ldaps://, 0 without TLS

	mu sync.Mutex     // held by Stop while it waits, so Stop is serialised
	p  *testproc.Proc // the running process, nil once stopped
}

// proc is one run of slapd.
// Start runs slapd with its own cn=config in t.TempDir() and waits until it
// answers; it is stopped at t.Cleanup.
//
// The config: an mdb database with suffix Suffix and root DN AdminDN
// (password AdminPassword); the schemas core, cosine, nis and inetorgperson;
// and a schema "calloutd" with an attribute proxyAddresses (multi-valued,
// case-insensitive directory string, equality and substring matching, like
// Active Directory's) and an auxiliary object class calloutdProxy that MAY
// have it, so that tests can mimic AD's (|(mail=%s)(proxyAddresses=smtp:%s)).
// mail, proxyAddresses, uid, cn and objectClass have equality indexes.
//
// The tree, loaded with slapadd before the first start: Suffix
// (dcObject, organization) and BindDN (organizationalRole,
// simpleSecurityObject) with userPassword BindPassword. Access: BindDN and
// the root DN may read every entry and attribute, but for userPassword, which
// only the root DN may read; anyone may bind (userPassword: auth); anonymous
// may read nothing but the root DSE and the subschema entry, which clients
// use to discover the server's features. Then o.Entries is added with
// ldapadd as the root DN.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	Need(t)
	tl := findTools()
	dir := t.TempDir()
	s := &Server{
		dir:     dir,
		confDir: filepath.Join(dir, "slapd.d"),
		log:     filepath.Join(dir, "slapd.log"),
		token:   randomHex(16),
	}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(s.Stop)

	var tlsFiles *tlsFiles
	if o.TLS {
		var err error
		if tlsFiles, err = writeTLSFiles(dir); err != nil {
			t.Fatalf("ldaptest: TLS certificate: %v", err)
		}
		s.caFile = tlsFiles.ca
	}
	for _, d := range []string{s.confDir, filepath.Join(dir, "data")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatalf("ldaptest: %v", err)
		}
	}
	s.slapadd(t, "0", "config.ldif", configLDIF(tl, dir, tlsFiles))
	s.slapadd(t, "1", "base.ldif", s.baseLDIF())

	for try := 1; ; try++ {
		ports := freePorts(t, 1+btoi(o.TLS))
		s.port = ports[0]
		if o.TLS {
			s.tlsPort = ports[1]
		}
		err := s.boot()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || try == portTries {
			t.Fatalf("ldaptest: starting slapd on %s: %v", s.urls(), err)
		}
	}
	if o.Entries != "" {
		s.Add(t, o.Entries)
	}
	return s
}

// URL returns the server's plain LDAP URL, "ldap://127.0.0.1:PORT".
func (s *Server) URL() string { return "ldap://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// LDAPSURL returns the server's LDAP over TLS URL, "ldaps://127.0.0.1:PORT",
// or "" when it was started without Options.TLS.
func (s *Server) LDAPSURL() string {
	if s.tlsPort == 0 {
		return ""
	}
	return "ldaps://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort))
}

// CAFile returns the path of the PEM certificate of the CA that signed the
// server's certificate, or "" when it was started without Options.TLS.
func (s *Server) CAFile() string { return s.caFile }

// Add adds the entries of ldif with `ldapadd -x` bound as the root DN, on the
// server's ldap:// URL; it fails t, quoting ldapadd's output and slapd's log,
// when ldapadd fails (an entry exists already, a schema violation, the server
// is stopped...). Entries before the failing one stay added.
func (s *Server) Add(t testing.TB, ldif string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdLimit)
	defer cancel()
	args := []string{"-x", "-H", s.URL(), "-D", AdminDN, "-w", AdminPassword, "-o", "nettimeout=5"}
	cmd := exec.CommandContext(ctx, findTools().ldapadd, args...)
	// No ldap.conf, .ldaprc or LDAP* variable of the user's applies.
	cmd.Env = append(clientEnv(), "LDAPNOINIT=1")
	cmd.Dir = s.dir
	cmd.Stdin = strings.NewReader(ldif)
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("ldaptest: ldapadd %s against %s: %v\n%s\n--- the LDIF ---\n%s%s",
			strings.Join(args, " "), s.URL(), err, strings.TrimSpace(out.String()), ldif, s.logTail())
	}
}

// Stop stops slapd with SIGTERM (SIGKILL if it has not exited within 10 s)
// and waits until it has exited; its ports then refuse connections. It does
// nothing when the server is not running, so it may be called any number of
// times.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return
	}
	pid := s.p.Pid()
	// To its process group, which is slapd alone: it does not fork.
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-s.p.Done:
	case <-time.After(stopLimit):
		s.p.Kill()
	}
	s.p = nil
}

// Start starts slapd again, after Stop, on the same ports with the same
// config and data, and waits until it answers; a running server is stopped
// first. If a port is taken meanwhile it retries for a while, then fails t.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.Stop()
	deadline := time.Now().Add(upLimit)
	for {
		err := s.boot()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			t.Fatalf("ldaptest: restarting slapd on %s: %v", s.urls(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// urls is the -h argument of slapd.
func (s *Server) urls() string {
	u := s.URL() + "/"
	if s.tlsPort != 0 {
		u += " " + s.LDAPSURL() + "/"
	}
	return u
}

// slapadd writes ldif to dir/name and loads it into database n with slapadd.
func (s *Server) slapadd(t testing.TB, n, name, ldif string) {
	t.Helper()
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, []byte(ldif), 0o600); err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdLimit)
	defer cancel()
	args := []string{"-q", "-n", n, "-F", s.confDir, "-l", path}
	cmd := exec.CommandContext(ctx, findTools().slapadd, args...)
	cmd.Env = clientEnv()
	cmd.Dir = s.dir
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("ldaptest: slapadd %s: %v\n%s\n--- %s ---\n%s", strings.Join(args, " "), err,
			strings.TrimSpace(out.String()), path, ldif)
	}
}

// errPortTaken: slapd exited because one of its ports was in use.
var errPortTaken = errors.New("port in use")

// boot starts slapd and waits until it answers. On failure the process is
// gone and the error quotes its log.
func (s *Server) boot() error {
	logf, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	var logStart int64 // where this run's lines begin
	if fi, err := logf.Stat(); err == nil {
		logStart = fi.Size()
	}
	fmt.Fprintf(logf, "=== ldaptest: starting slapd on %s at %s\n", s.urls(), time.Now().Format(time.RFC3339Nano))
	// -d keeps slapd in the foreground, its log on stderr; "stats" logs
	// connections and operations, and the errors that any level logs
	// (-d 0 logs nothing at all, not even why slapd exits).
	cmd := exec.Command(findTools().slapd, "-d", "stats", "-F", s.confDir, "-h", s.urls())
	cmd.Env = clientEnv()
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := testproc.Start(cmd)
	logf.Close() // the child has its own copy
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()

	if err := s.awaitUp(p); err != nil {
		s.Stop()
		// slapd 2.5 logs "daemon: bind(7) failed errno=98 (Address
		// already in use)" and exits.
		taken := false
		if log := s.logText(); int64(len(log)) > logStart {
			taken = strings.Contains(log[logStart:], "Address already in use")
		}
		err = fmt.Errorf("%w%s", err, s.logTail())
		if taken {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return err
	}
	return nil
}

// awaitUp waits until the server on s.URL() lets BindDN bind and read this
// server's token, so that a slapd of some other test that took the port
// meanwhile is not mistaken for ours.
func (s *Server) awaitUp(p *testproc.Proc) error {
	deadline := time.Now().Add(upLimit)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	var last error
	for {
		select {
		case <-p.Done:
			return fmt.Errorf("slapd exited: %v", p.Err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond); err != nil {
			last = err
		} else {
			c.Close()
			last = s.probe(p)
			if last == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering after %v: %v", upLimit, last)
		}
		time.Sleep(pollEvery)
	}
}

// probe reads the description of Suffix as BindDN with ldapsearch, and
// returns an error unless it holds s.token. It gives up when p exits: what
// holds the port then, and may never answer, is not our slapd.
func (s *Server) probe(p *testproc.Proc) error {
	ctx, cancel := context.WithTimeout(context.Background(), probeLimit)
	defer cancel()
	go func() {
		select {
		case <-p.Done:
			cancel()
		case <-ctx.Done():
		}
	}()
	cmd := exec.CommandContext(ctx, findTools().ldapsearch, "-x", "-LLL", "-o", "ldif_wrap=no", "-o", "nettimeout=2",
		"-H", s.URL(), "-D", BindDN, "-w", BindPassword, "-b", Suffix, "-s", "base", "description")
	cmd.Env = append(clientEnv(), "LDAPNOINIT=1")
	cmd.Dir = s.dir
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ldapsearch: %v: %s", err, strings.TrimSpace(out.String()))
	}
	if !strings.Contains(out.String(), "description: ldaptest "+s.token+"\n") {
		return fmt.Errorf("another server answers there: %s", strings.TrimSpace(out.String()))
	}
	return nil
}

// clientEnv is the environment less the LDAP* variables (LDAPCONF, LDAPRC,
// LDAPTLS_*, LDAPBINDDN, ...), which would change what the tools do.
func clientEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LDAP") {
			env = append(env, kv)
		}
	}
	return env
}

func (s *Server) logText() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// logTail returns the last lines of slapd's log, for a failure message.
func (s *Server) logTail() string {
	lines := strings.Split(strings.TrimRight(s.logText(), "\n"), "\n")
	if len(lines) > logTailLen {
		lines = lines[len(lines)-logTailLen:]
	}
	return fmt.Sprintf("\n--- slapd (%s), last lines of %s ---\n%s", s.urls(), s.log, strings.Join(lines, "\n"))
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("ldaptest: no free port: %v", err)
		}
		defer l.Close() // held until all are picked, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// ssha returns pw hashed as {SSHA}, salted SHA-1, which slapd verifies on
// bind as it does for slappasswd's default output.
func ssha(pw string) string {
	salt := make([]byte, 8)
	_, _ = rand.Read(salt)
	h := sha1.Sum(append([]byte(pw), salt...))
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h[:], salt...))
}

// The extra schema: AD's proxyAddresses is a multi-valued Unicode string
// compared without regard to case. The OIDs are under the private enterprise
// number that IANA reserves for documentation (1.3.6.1.4.1.32473, RFC 5612).
const calloutdSchema = `dn: cn=calloutd,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: calloutd
olcAttributeTypes: ( 1.3.6.1.4.1.32473.1.1.1 NAME 'proxyAddresses'
  DESC 'like Active Directory: addresses as TYPE:address, SMTP: the primary'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{1123} )
olcObjectClasses: ( 1.3.6.1.4.1.32473.1.2.1 NAME 'calloutdProxy'
  DESC 'an entry with Active Directory like proxyAddresses'
  AUXILIARY MAY proxyAddresses )
`

// configLDIF returns the cn=config of a server in dir, for slapadd -n0.
func configLDIF(tl tools, dir string, tf *tlsFiles) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("dn: cn=config")
	line("objectClass: olcGlobal")
	line("cn: config")
	line("olcPidFile: %s", filepath.Join(dir, "slapd.pid"))
	line("olcArgsFile: %s", filepath.Join(dir, "slapd.args"))
	// Nothing to syslog; -d stats still logs to stderr.
	line("olcLogLevel: 0")
	if tf != nil {
		line("olcTLSCACertificateFile: %s", tf.ca)
		line("olcTLSCertificateFile: %s", tf.cert)
		line("olcTLSCertificateKeyFile: %s", tf.key)
		line("olcTLSVerifyClient: never")
	}
	line("")
	if tl.moduleDir != "" {
		line("dn: cn=module{0},cn=config")
		line("objectClass: olcModuleList")
		line("cn: module{0}")
		line("olcModulePath: %s", tl.moduleDir)
		line("olcModuleLoad: back_mdb")
		line("")
	}
	line("dn: cn=schema,cn=config")
	line("objectClass: olcSchemaConfig")
	line("cn: schema")
	line("")
	for _, sc := range schemas {
		line("include: file://%s", filepath.Join(tl.schemaDir, sc+".ldif"))
		line("")
	}
	b.WriteString(calloutdSchema)
	line("")
	line("dn: olcDatabase={-1}frontend,cn=config")
	line("objectClass: olcDatabaseConfig")
	line("objectClass: olcFrontendConfig")
	line("olcDatabase: {-1}frontend")
	line(`olcAccess: {0}to dn.base="" by * read`)
	line(`olcAccess: {1}to dn.base="cn=Subschema" by * read`)
	line("")
	line("dn: olcDatabase={0}config,cn=config")
	line("objectClass: olcDatabaseConfig")
	line("olcDatabase: {0}config")
	line("olcAccess: {0}to * by * none")
	line("")
	line("dn: olcDatabase={1}mdb,cn=config")
	line("objectClass: olcDatabaseConfig")
	line("objectClass: olcMdbConfig")
	line("olcDatabase: {1}mdb")
	line("olcDbDirectory: %s", filepath.Join(dir, "data"))
	line("olcSuffix: %s", Suffix)
	line("olcRootDN: %s", AdminDN)
	line("olcRootPW: %s", ssha(AdminPassword))
	line("olcDbNoSync: TRUE") // a test's data need not survive a crash of the machine
	line("olcDbIndex: objectClass eq")
	line("olcDbIndex: cn,uid,mail,proxyAddresses eq")
	// The root DN may do anything whatever the rules say.
	line("olcAccess: {0}to attrs=userPassword by * auth")
	line(`olcAccess: {1}to * by dn.exact="%s" read by * none`, BindDN)
	return b.String()
}

// baseLDIF returns the entries every server starts with, for slapadd -n1.
func (s *Server) baseLDIF() string {
	return fmt.Sprintf(`dn: %s
objectClass: dcObject
objectClass: organization
dc: example
o: example
description: ldaptest %s

dn: %s
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: calloutd
description: the account calloutd binds as
userPassword: %s
`, Suffix, s.token, BindDN, ssha(BindPassword))
}

// tlsFiles are the PEM files of a server with TLS.
type tlsFiles struct {
	ca   string // the CA's certificate
	cert string // the server's certificate
	key  string // its key, PKCS#8
}

// writeTLSFiles generates a CA and a server certificate it signs, for
// 127.0.0.1, ::1, localhost and the host name, and writes them into dir.
// Keys are ECDSA P-256; the server's key is written as PKCS#8 ("PRIVATE
// KEY"), which GnuTLS (Debian's slapd) reads, as it reads SEC1.
func writeTLSFiles(dir string) (*tlsFiles, error) {
	caCert, caKey, err := newCA()
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	dns := []string{"localhost"}
	// libldap checks the host name of the machine instead of "localhost".
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"ldaptest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		DNSNames:              dns,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	tf := &tlsFiles{
		ca:   filepath.Join(dir, "ca.pem"),
		cert: filepath.Join(dir, "server.pem"),
		key:  filepath.Join(dir, "server.key"),
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{tf.ca, "CERTIFICATE", caCert.Raw, 0o644},
		{tf.cert, "CERTIFICATE", der, 0o644},
		{tf.key, "PRIVATE KEY", keyDER, 0o600},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return nil, err
		}
	}
	return tf, nil
}

// newCA returns a self-signed CA certificate and its key.
func newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ldaptest CA " + randomHex(4), Organization: []string{"ldaptest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}
