package callout

import "testing"

func TestParseServer(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" for an error
	}{
		// The forms of ParseServer's comment.
		{"mx.example.test", "mx.example.test:25"},
		{"mx.example.test:2525", "mx.example.test:2525"},
		{"192.0.2.1", "192.0.2.1:25"},
		{"192.0.2.1:2525", "192.0.2.1:2525"},
		{"[2001:db8::5]", "[2001:db8::5]:25"},
		{"[2001:db8::5]:2525", "[2001:db8::5]:2525"},
		{"2001:db8::5", "[2001:db8::5]:25"},
		// More of the same.
		{"MX.Example.TEST", "MX.Example.TEST:25"},
		{"mx.example.test.", "mx.example.test.:25"},
		{"mx.example.test.:2525", "mx.example.test.:2525"},
		{"localhost:1", "localhost:1"},
		{"localhost:65535", "localhost:65535"},
		{"127.0.0.1:2526", "127.0.0.1:2526"},
		{"::1", "[::1]:25"},
		{"[::1]:2526", "[::1]:2526"},
		{"[::ffff:192.0.2.1]:25", "[::ffff:192.0.2.1]:25"},
		{"[fe80::1%eth0]:25", "[fe80::1%eth0]:25"},
		// A bare IPv6 address cannot carry a port: this is an address.
		{"2001:db8::5:2525", "[2001:db8::5:2525]:25"},

		{"", ""},
		{":25", ""},
		{"mx.example.test:", ""},
		{"mx.example.test:0", ""},
		{"mx.example.test:65536", ""},
		{"mx.example.test:-1", ""},
		{"mx.example.test:smtp", ""},
		{"mx.example.test: 25", ""},
		{"mx.example.test:25:26", ""},
		{"mx_1.example.test", ""},
		{"-mx.example.test", ""},
		{"mx..example.test", ""},
		{"mx example.test", ""},
		{"a:b:c", ""},
		{"[2001:db8::5", ""},
		{"[2001:db8::5]x", ""},
		{"[2001:db8::5]:", ""},
		{"[2001:db8::5]:0", ""},
		{"[2001:db8::5]:99999", ""},
		{"[192.0.2.1]", ""},
		{"[192.0.2.1]:25", ""},
		{"[mx.example.test]:25", ""},
		{"[]", ""},
		{"[]:25", ""},
		{"2001:db8:::5", ""},
	}
	for _, tc := range tests {
		got, err := ParseServer(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseServer(%q) = %q, want an error", tc.in, got)
		case tc.want != "" && err != nil:
			t.Errorf("ParseServer(%q): %v, want %q", tc.in, err, tc.want)
		case got != tc.want:
			t.Errorf("ParseServer(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
