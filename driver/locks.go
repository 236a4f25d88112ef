package driver

import "sync"

// Locker hands out one read-write lock per layer ID, created on demand and
// dropped when unused, so locking one layer never waits on another.
type Locker struct {
	mu    sync.Mutex
	locks map[string]*idLock
}

type idLock struct {
	sync.RWMutex
	users int
}

func (l *Locker) acquire(id string) *idLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = make(map[string]*idLock)
	}
	lk := l.locks[id]
	if lk == nil {
		lk = &idLock{}
		l.locks[id] = lk
	}
	lk.users++
	return lk
}

func (l *Locker) release(id string, lk *idLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk.users--
	if lk.users == 0 {
		delete(l.locks, id)
	}
}

// Lock takes id's lock for writing and returns the function that releases it.
func (l *Locker) Lock(id string) (unlock func()) {
	lk := l.acquire(id)
	lk.Lock()
	return func() { lk.Unlock(); l.release(id, lk) }
}

// RLock takes id's lock for reading and returns the function that releases it.
func (l *Locker) RLock(id string) (unlock func()) {
	lk := l.acquire(id)
	lk.RLock()
	return func() { lk.RUnlock(); l.release(id, lk) }
}
