"""``RigClient``: the service from the rig (torch-free): ``ServiceClient``'s operations, plus
the rig's files read, checked against the session and uploaded (trial tables, spike times, NWB,
the acquisition systems' recordings)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from stimloop_contract.errors import TrialFileError
from stimloop_contract.service_client import ServiceClient
from stimloop_contract.system import Accepted

from stimloop_rig.readers import read_rig_file
from stimloop_rig.recording import (
    RecordedTrials,
    RecordingSettings,
    check_sequence,
    read_recording,
)

if TYPE_CHECKING:  # pyzmq is imported only by a follower
    from stimloop_rig.follow import Follower, FollowSettings


class RigClient(ServiceClient):
    """A ``ServiceClient`` that also reads the rig's files and checks them against the
    session before anything is uploaded."""

    def upload_file(
        self,
        session_id: str,
        phase: int,
        path: Path,
        replace: bool = False,
        recording_start: datetime | None = None,
    ) -> tuple[dict[str, np.ndarray], Accepted]:
        """Read a rig file (trial table, spike times, NWB), check it against the session, and
        upload it. Spike times are cut with the session's own baseline and response windows.
        A trial naming a stimulus the phase does not show, or a channel the session does not
        have, is refused here, naming the file and the row (``TrialFileError``)."""
        config = self.session(session_id).config
        windows = config.windows
        columns, spikes = read_rig_file(path, baseline=windows.baseline, response=windows.response)
        shown, what = self.phase_stimuli(session_id, phase, config)
        check_trial_ids(path, columns, shown, what, config.channels)
        accepted = self.upload_phase(
            session_id, phase, columns, replace, recording_start, spikes=spikes
        )
        return columns, accepted

    def recorded_trials(
        self,
        session_id: str,
        phase: int,
        path: Path,
        settings: RecordingSettings,
        any_order: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> RecordedTrials:
        """An acquisition system's recording (``recording.read_recording``) as the session's
        trials, checked before anything is uploaded: the session's windows cut the counts,
        every stimulus and channel is the session's, and in phases two and three the
        presentation order is the list's sequence (unless ``any_order``)."""
        config = self.session(session_id).config
        found = read_recording(
            path,
            settings,
            baseline=config.windows.baseline,
            response=config.windows.response,
            progress=progress,
        )
        shown, what = self.phase_stimuli(session_id, phase, config)
        check_trial_ids(path, found.columns, shown, what, config.channels)
        if phase > 1 and not any_order:
            listed = self.selection(session_id) if phase == 2 else self.phase_three_list(session_id)
            check_sequence(found.sequence, listed.sequence, found.source)
        return found

    def follower(self, session_id: str, phase: int, settings: FollowSettings) -> Follower:
        """A follower of ``phase`` as the Open Ephys GUI records it (``follow``): drive it
        with ``follow.follow`` or ``step`` and ``finish``. Phases two and three end, unless
        told otherwise, once their list's sequence has been presented."""
        from stimloop_rig.follow import Follower

        if settings.trials is None and phase > 1:
            listed = self.selection(session_id) if phase == 2 else self.phase_three_list(session_id)
            settings = replace(settings, trials=len(listed.sequence))
        return Follower(self, session_id, phase, settings)


def check_trial_ids(
    path: Path,
    columns: dict[str, np.ndarray],
    stimuli: set[str],
    what: str,
    channels: list[str],
) -> None:
    """``TrialFileError`` naming the file, the first row and how many rows name a stimulus
    not in ``stimuli`` or a channel not in ``channels``."""
    for column, allowed, where in (
        ("channel", set(channels), "a channel of the session"),
        ("stimulus", stimuli, what),
    ):
        values = np.asarray(columns[column]).astype(str)
        bad = np.flatnonzero(~np.isin(values, list(allowed)))
        if len(bad):
            first = int(bad[0])
            others = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
            raise TrialFileError(
                f"{path}: row {first + 1}{others}: {column} {str(values[first])!r} is not "
                f"{where}; "
                "fix the file (or the stimulus program's codes) and upload it again"
            )
