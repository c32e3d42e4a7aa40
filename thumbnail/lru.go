package thumbnail

import (
	"container/list"
	"sync"
)

// lru is a least-recently-used cache of encoded thumbnails bounded by the
// sum of their sizes. A nil *lru (capacity 0) caches nothing.
type lru struct {
	mu    sync.Mutex
	max   int64
	used  int64
	order *list.List // front: most recently used
	items map[string]*list.Element
}

type entry struct {
	key  string
	data []byte
}

func newLRU(maxBytes int64) *lru {
	if maxBytes <= 0 {
		return nil
	}
	return &lru{max: maxBytes, order: list.New(), items: map[string]*list.Element{}}
}

func (c *lru) get(key string) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*entry).data, true
}

// add stores data (never modified afterwards) and evicts the least recently
// used entries until the total fits. An entry larger than the whole cache is
// not stored.
func (c *lru) add(key string, data []byte) {
	if c == nil || int64(len(data)) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.items[key] = c.order.PushFront(&entry{key: key, data: data})
	c.used += int64(len(data))
	for c.used > c.max {
		e := c.order.Back()
		ent := e.Value.(*entry)
		c.order.Remove(e)
		delete(c.items, ent.key)
		c.used -= int64(len(ent.data))
	}
}

// bytes reports the cached total (for tests).
func (c *lru) bytes() int64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}
