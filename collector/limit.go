package collector

import (
	"fmt"
	"net"
	"net/http"
	"sync"
)

// perClient answers 429 to a client address that already has max requests
// in flight, so that one agent (or a misbehaving script) cannot take all
// of the store's attention. Clients are told apart by IP: many agents
// behind one NAT share a bound, which the flag can raise.
func perClient(max int, m *metrics, next http.Handler) http.Handler {
	var mu sync.Mutex
	inFlight := map[string]int{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		mu.Lock()
		if inFlight[host] >= max {
			mu.Unlock()
			m.clientLimited.Inc()
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "too_many_requests",
				fmt.Sprintf("%d requests of %s are in flight already (--max-requests-per-client)", max, host))
			return
		}
		inFlight[host]++
		mu.Unlock()
		defer func() {
			mu.Lock()
			if inFlight[host]--; inFlight[host] == 0 {
				delete(inFlight, host) // the map holds only clients in flight
			}
			mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}
