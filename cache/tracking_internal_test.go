package cache

import (
	"bufio"
	"slices"
	"strings"
	"testing"
)

func TestClusterMasters(t *testing.T) {
	text := `07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master - 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master,fail - 1426238316232 0 6 disconnected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
a1 :0@0 master,noaddr - 0 0 7 disconnected
`
	want := []string{"127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003", "127.0.0.1:30005"}
	if got := clusterMasters(text); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (a master without slots included; failed and address-less left out)", got, want)
	}
}

// Hostile RESP input ends in an error, never a crash or a huge allocation.
func TestReadValueHostile(t *testing.T) {
	for _, in := range []string{
		strings.Repeat("|0\r\n", 100000) + "+OK\r\n",
		strings.Repeat("*1\r\n", 100) + ":1\r\n",
		"$1073741824\r\n",
		"*99999999\r\n",
		"$3\r\nabcXY",
		"?\r\n",
		"+OK\n",
	} {
		if _, err := readValue(bufio.NewReader(strings.NewReader(in))); err == nil {
			t.Errorf("%.20q...: no error", in)
		}
	}
	v, err := readValue(bufio.NewReader(strings.NewReader(">2\r\n$10\r\ninvalidate\r\n*1\r\n$5\r\nk:a@b\r\n")))
	if p, ok := v.(respPush); err != nil || !ok || len(p) != 2 || p[0] != "invalidate" {
		t.Errorf("push: %#v %v", v, err)
	}
}
