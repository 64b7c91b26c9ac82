package events

import (
	"context"
	"fmt"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// JobEvent builds an emitted job event: its data is the job as the REST API returns it, and
// it carries the jobid, jobgroupid and hubid extensions. The id is derived from the job, the
// type and the job's fence and state, so re-publishing the same change (a retried handler)
// emits the same event id and consumers de-duplicate it.
func JobEvent(typ, hubID, function string, j *model.Job) (event.Event, error) {
	e := event.New()
	e.SetType(typ)
	e.SetSource(Source(hubID, function))
	e.SetID(uuid.NewSHA1(uuid.NameSpaceURL, []byte(fmt.Sprintf("%s/%s/%d/%d/%d/%d", typ, j.ID, j.Fence, j.State, j.Type, j.UpdatedAt.UnixNano()))).String())
	e.SetSubject(j.ID)
	e.SetExtension(ExtJobID, j.ID)
	if j.JobGroupID != "" {
		e.SetExtension(ExtJobGroupID, j.JobGroupID)
	}
	if hubID != "" {
		e.SetExtension(ExtHubID, hubID)
	}
	if err := e.SetData(cloudevents.ApplicationJSON, j); err != nil {
		return e, fmt.Errorf("job event data: %w", err)
	}
	return e, nil
}

// PublishJobs publishes one event of type typ per job, returning the first error after
// trying them all.
func PublishJobs(ctx context.Context, p Publisher, typ, hubID, function string, jobs []model.Job) error {
	var first error
	for i := range jobs {
		e, err := JobEvent(typ, hubID, function, &jobs[i])
		if err == nil {
			err = p.Publish(ctx, e)
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}
