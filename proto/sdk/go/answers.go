package operon

// The attempt cache: the core gives every attempt an id (the same object, handler, change and
// retry count give the same id). When the core dies after a handler ran but before it persisted
// the outcome, it calls again with the same id; the SDK then answers what it answered before,
// without running the handler again. A call that arrives while the first one with its id still
// runs waits for that one's answer.

import (
	"context"
	"sync"

	"google.golang.org/grpc/status"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// rememberedAttempts is how many answers the cache keeps (the oldest go first).
const rememberedAttempts = 10_000

type answer struct {
	done     chan struct{}
	response *pb.InvokeResponse // nil when the call failed (a gRPC error): not remembered
}

type answers struct {
	mu    sync.Mutex
	byID  map[string]*answer
	order []string
	limit int
}

func newAnswers(limit int) *answers {
	return &answers{byID: map[string]*answer{}, limit: limit}
}

// claim returns the answer for id: owner is true when the caller must compute it (and then
// call settle), false when another call did or does (wait on done).
func (a *answers) claim(id string) (ans *answer, owner bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ans, ok := a.byID[id]; ok {
		return ans, false
	}
	ans = &answer{done: make(chan struct{})}
	a.byID[id] = ans
	return ans, true
}

// settle records the owner's response (nil: forget the id, so that a later call runs again).
func (a *answers) settle(id string, ans *answer, response *pb.InvokeResponse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ans.response = response
	close(ans.done)
	if response == nil {
		delete(a.byID, id)
		return
	}
	a.order = append(a.order, id)
	for len(a.order) > a.limit {
		delete(a.byID, a.order[0])
		a.order = a.order[1:]
	}
}

// do answers the attempt id with run's response, or with the remembered one. An empty id is
// never remembered. replayed is true when the answer was remembered.
func (a *answers) do(ctx context.Context, id string, run func() (*pb.InvokeResponse, error)) (
	response *pb.InvokeResponse, replayed bool, err error,
) {
	if id == "" {
		response, err = run()
		return response, false, err
	}
	for {
		ans, owner := a.claim(id)
		if owner {
			response, err = run()
			a.settle(id, ans, response)
			return response, false, err
		}
		select {
		case <-ans.done:
			if ans.response != nil {
				return ans.response, true, nil
			}
			// The first call failed without an answer: run again.
		case <-ctx.Done():
			return nil, false, status.FromContextError(ctx.Err()).Err()
		}
	}
}
