package intercept

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkControl returns a net.Dialer Control function that sets SO_MARK on
// the socket before it connects: the agent marks its own upstream sockets
// with Config.Mark so that the programs never redirect them. Zero: nil.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setting SO_MARK %#x (needs CAP_NET_ADMIN): %w", mark, serr)
		}
		return nil
	}
}
