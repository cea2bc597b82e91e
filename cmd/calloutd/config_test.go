package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCommand(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "legacy.txt")
	if err := os.WriteFile(list, []byte("bob@legacy.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.toml", `admin_socket = ""
[callout]
helo_name = "gw.example.net"
[cache.redis]
password = "s3cret"
[[route]]
name = "legacy"
domains = ["Legacy.test"]
recipients_file = "`+list+`"
callout = false
`)
	warns := write("warns.toml", `[callout]
helo_name = "gw"
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:10040"]
`)
	missing := write("missing.toml", `[callout]
helo_name = "gw.example.net"
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:2526"]
tls_verify = true
tls_ca_file = "`+dir+`/no-ca.pem"
`)
	tests := []struct {
		name           string
		args           []string
		code           int
		stdout, stderr string
	}{
		{
			"-n", []string{"config", "-n", "-config", good}, 0,
			"admin_socket = \"\"\n\n[callout]\nhelo_name = \"gw.example.net\"\n\n[cache.redis]\npassword = \"<masked>\"\n\n" +
				"[[route]]\nname = \"legacy\"\ndomains = [\"legacy.test\"]\nrecipients_file = \"" + list + "\"\ncallout = false\n", "",
		},
		{"-check, good", []string{"config", "-check", "-config", good}, 0, "", ""},
		{
			"-check, warnings", []string{"config", "-config", warns, "-check"}, 0, "",
			"calloutd: warning: warns.toml: callout.helo_name: \"gw\" is not fully qualified; backends with reject_non_fqdn_helo_hostname refuse the callout\n" +
				"calloutd: warning: warns.toml: route[0].servers[0]: \"127.0.0.1:10040\" is calloutd itself (listen[0] = \"127.0.0.1:10040\"): the route would ask calloutd, not a mail server\n",
		},
		{
			"-check, a file serve would not find", []string{"config", "-check", "-config", missing}, 78, "",
			"calloutd: missing.toml: route \"route[0]\": tls_ca_file: open " + dir + "/no-ca.pem: no such file or directory\n",
		},
		{
			"a file Load refuses", []string{"config", "-config", write("bad.toml", "[cache]\nnegativ_ttl = \"1h\"\n")}, 78, "",
			"calloutd: bad.toml: unknown key cache.negativ_ttl\n",
		},
		{
			"-check of a file Load refuses", []string{"config", "-check", "-config", filepath.Join(dir, "bad.toml")}, 78, "",
			"calloutd: bad.toml: unknown key cache.negativ_ttl\n",
		},
		{"-n and -check", []string{"config", "-n", "-check", "-config", good}, 64, "", "usage: calloutd config [-config FILE] [-n | -check]\n"},
		{"an argument", []string{"config", "-config", good, "extra"}, 64, "", "usage: calloutd config [-config FILE] [-n | -check]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := calloutd(tt.args...)
			if code != tt.code || out != tt.stdout || errOut != tt.stderr {
				t.Errorf("calloutd %q:\nexit %d, stdout %q, stderr %q\nwant %d, stdout %q, stderr %q", tt.args, code, out, errOut, tt.code, tt.stdout, tt.stderr)
			}
		})
	}

	// Printed whole, the file is every key, loads, and prints the same.
	code, out, errOut := calloutd("config", "-config", good)
	for _, want := range []string{"listen = [\"127.0.0.1:10040\"]\n", "\n[harvest]\nmax_unknown = 0\n", "\npassword = \"<masked>\"\n", "\n# negative_ttl = \"2h\"  (from [cache])\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("config: output lacks %q:\n%s", want, out)
		}
	}
	if code != 0 || errOut != "" || strings.Contains(out, "s3cret") {
		t.Fatalf("config: exit %d, stderr %q, output:\n%s", code, errOut, out)
	}
	again := write("printed.toml", out)
	if code, out2, errOut := calloutd("config", "-config", again); code != 0 || out2 != out {
		t.Errorf("printed file printed again: exit %d, stderr %q, differs:\n%s", code, errOut, out2)
	}
}
