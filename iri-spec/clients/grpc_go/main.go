// A grpc-go client for the serving tests of every irikit runtime (issue 13): Debian's
// golang-google-grpc-dev (grpc-go 1.33.3), built in GOPATH mode, dialling the socket path
// through a custom dialer as CRI-era Go code did. grpc-go then sends the raw socket path as
// `:authority`, the form grpc-java/netty also sends, which a strict h2 server resets.
//
// It forwards bytes only, so it needs no generated code: each stdin line is
// `<method path> <request as hex>`; for each it prints `<grpc code number> <response as hex>`
// (the response empty on an error). The Rust side encodes and decodes with prost.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// rawCodec passes the caller's bytes through as the message.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc_go <socket path>")
		os.Exit(2)
	}
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := grpc.DialContext(ctx, os.Args[1], grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(dialer))
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		req := []byte{}
		if len(fields) > 1 {
			if req, err = hex.DecodeString(fields[1]); err != nil {
				fmt.Fprintln(os.Stderr, "bad hex:", err)
				os.Exit(2)
			}
		}
		var resp []byte
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := conn.Invoke(ctx, fields[0], &req, &resp, grpc.ForceCodec(rawCodec{}))
		cancel()
		fmt.Printf("%d %s\n", status.Code(err), hex.EncodeToString(resp))
	}
}
