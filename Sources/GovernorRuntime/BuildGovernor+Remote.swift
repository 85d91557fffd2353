import JobgovCore

extension BuildGovernor {
    /// A finished job: a remote one tells what remote jobs hold here; a local one (a fallback too) teaches the
    /// memory model.
    func record(_ job: FinishedJob) {
        remote.noteFinished(job)
        if !job.ranRemotely { model.record(job) }
        stats.record(job)
    }

    /// A remote job as the governor sees it: planned at what remote jobs hold here, whatever the same command
    /// held when it last compiled here.
    func remoteJob(_ job: Job, now t: Double) -> GovernorInput.RunningJob {
        var r = GovernorInput.RunningJob(
            id: job.id, startedAt: job.startedAt, rssBytes: job.rssBytes, peakBytes: job.peakBytes,
            predictedPeakBytes: remote.peakBytes, frozen: job.frozen,
            growing: t - job.lastGrowthAt < options.settings.growingSeconds, growthRate: job.growthRate,
            ranSeconds: job.activeSeconds(at: t), pagedOutBytes: job.pagedOutBytes)
        r.remote = true
        return r
    }
}
