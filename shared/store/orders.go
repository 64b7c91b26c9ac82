package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// A group order (stop, start) that arrives while some of the group's jobs are being executed
// cannot re-open those jobs yet: it is accepted and kept here as the group's pending order,
// which the jobs function's cron tick carries out once the jobs have ended. The last order
// wins: a start after a pending stop replaces it.

// Pending orders.
const (
	OrderStop  = "stop"
	OrderStart = "start"
)

// SetPendingOrder records order as group id's pending order.
func (s *Store) SetPendingOrder(ctx context.Context, id, order string) error {
	if err := invalid("set pending order", checkID(id, "id")); err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, s.ordersKey(), id, order).Err(); err != nil {
		return fmt.Errorf("set pending order of group %s: %w", id, err)
	}
	return nil
}

// PendingOrder is group id's pending order, "" when it has none.
func (s *Store) PendingOrder(ctx context.Context, id string) (string, error) {
	if err := invalid("get pending order", checkID(id, "id")); err != nil {
		return "", err
	}
	o, err := s.rdb.HGet(ctx, s.ordersKey(), id).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("get pending order of group %s: %w", id, err)
	}
	return o, nil
}

// PendingOrders are every group's pending order, by group id.
func (s *Store) PendingOrders(ctx context.Context) (map[string]string, error) {
	m, err := s.rdb.HGetAll(ctx, s.ordersKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("list pending orders: %w", err)
	}
	return m, nil
}

// clearOrder deletes a group's pending order if it is ARGV[2] (any, if that is empty).
var clearOrder = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and (ARGV[2] == '' or cur == ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0`)

// ClearPendingOrder removes group id's pending order if it is order ("": whatever it is), so
// a tick that carried out a stop never clears the start a user ordered meanwhile.
func (s *Store) ClearPendingOrder(ctx context.Context, id, order string) error {
	if err := clearOrder.Run(ctx, s.rdb, []string{s.ordersKey()}, id, order).Err(); err != nil {
		return fmt.Errorf("clear pending order of group %s: %w", id, err)
	}
	return nil
}
