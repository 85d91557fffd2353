import JobgovCore

extension BuildGovernor {
    /// What the build asks of a shared budget now (see `BuildDemand`): from the last tick's input, or before the
    /// first tick from the prior alone.
    public var demand: BuildDemand {
        let input = lastInput ?? GovernorInput(now: 0, memoryUsedBytes: 0, jobs: [], nextJobPeakBytes: model.nextJobPeak)
        return BuildDemand.estimate(input, ceiling: governor.ceiling)
    }
}
