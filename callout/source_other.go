//go:build !unix

package callout

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
)

// bindSource: binding a source address is supported on Unix systems only.
func bindSource(netip.Addr, netip.Addr) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(context.Context, string, string, syscall.RawConn) error {
		return errors.New("source_address is not supported on this system")
	}
}
