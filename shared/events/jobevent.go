package events

import (
	"fmt"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// JobEvent builds the event an outbox entry holds: its data is the job as the REST API
// returns it (without its manifests and remediation, which can be large: read them with GET
// /jobmanager/jobs/{id}), and it carries the jobid, jobgroupid and hubid extensions (and traceparent, when the change was traced). The id is
// derived from the job's change (type, fence, state, time), so publishing the same entry
// again — a redelivery, the drain after a crash — emits the same event id and consumers
// de-duplicate it.
func JobEvent(e store.OutboxEntry) (event.Event, error) {
	j := &e.Job
	ev := event.New()
	ev.SetType(e.Type)
	ev.SetSource(e.Source)
	ev.SetID(uuid.NewSHA1(uuid.NameSpaceURL, []byte(fmt.Sprintf("%s/%s/%d/%d/%d/%d", e.Type, j.ID, j.Fence, j.State, j.Type, j.UpdatedAt.UnixNano()))).String())
	ev.SetTime(j.UpdatedAt)
	ev.SetSubject(j.ID)
	ev.SetExtension(ExtJobID, j.ID)
	if j.JobGroupID != "" {
		ev.SetExtension(ExtJobGroupID, j.JobGroupID)
	}
	if hub := HubOf(e.Source); hub != "" {
		ev.SetExtension(ExtHubID, hub)
	}
	if e.Traceparent != "" {
		ev.SetExtension(telemetry.ExtTraceparent, e.Traceparent)
	}
	if err := ev.SetData(cloudevents.ApplicationJSON, j); err != nil {
		return ev, fmt.Errorf("job event data: %w", err)
	}
	return ev, nil
}

// HubOf is the hub id in a source Source made ("" when it names none).
func HubOf(source string) string {
	rest, ok := strings.CutPrefix(source, "/ocm-jobs/hubs/")
	if !ok {
		return ""
	}
	hub, _, _ := strings.Cut(rest, "/")
	if hub == "unknown" {
		return ""
	}
	return hub
}
