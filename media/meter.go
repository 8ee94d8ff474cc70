package media

import (
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

// meter counts RTP bytes (header + payload) crossing every peer connection
// of a node: received from publishers and sent to viewers and cascades,
// retransmissions included. It is a pion interceptor factory; the counters
// are read by the load reporter.
type meter struct {
	in, out atomic.Int64
}

// NewInterceptor implements interceptor.Factory.
func (m *meter) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &meterInterceptor{m: m}, nil
}

type meterInterceptor struct {
	interceptor.NoOp
	m *meter
}

// BindLocalStream counts outgoing RTP.
func (i *meterInterceptor) BindLocalStream(_ *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		n, err := w.Write(h, payload, a)
		if err == nil {
			i.m.out.Add(int64(h.MarshalSize() + len(payload)))
		}
		return n, err
	})
}

// BindRemoteStream counts incoming RTP.
func (i *meterInterceptor) BindRemoteStream(_ *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attr, err := r.Read(b, a)
		if err == nil {
			i.m.in.Add(int64(n))
		}
		return n, attr, err
	})
}
