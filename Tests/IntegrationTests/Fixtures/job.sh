#!/bin/sh
# A job that records when it ran: job.sh NAME SECONDS
# Appends "S <ns> NAME" when it starts and "E <ns> NAME" when it ends to $JOBLOG (short appends are atomic).
# The interval it records lies inside the time its client held a token for it, so overlaps measured from the log
# can only under-count the real concurrency, never over-count it.
echo "S $(date +%s%N) $1" >> "$JOBLOG"
sleep "$2"
echo "E $(date +%s%N) $1" >> "$JOBLOG"
