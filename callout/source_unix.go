//go:build unix

package callout

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// bindSource returns a net.Dialer control function that binds each socket,
// before it connects, to the source address of its family: the dialer
// learns the family only once it has resolved the server's name.
func bindSource(v4, v6 netip.Addr) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(_ context.Context, network, _ string, c syscall.RawConn) error {
		var sa syscall.Sockaddr
		switch {
		case network == "tcp4" && v4.IsValid():
			sa = &syscall.SockaddrInet4{Addr: v4.As4()}
		case network == "tcp6" && v6.IsValid():
			sa = &syscall.SockaddrInet6{Addr: v6.As16()}
		default:
			return nil // no source address of this family: the system's choice
		}
		var err error
		if cerr := c.Control(func(fd uintptr) { err = syscall.Bind(int(fd), sa) }); cerr != nil {
			return cerr
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("bind source address: %w: %w", ErrSourceAddress, err)
		}
		if err != nil {
			return fmt.Errorf("bind source address: %w", err)
		}
		return nil
	}
}
