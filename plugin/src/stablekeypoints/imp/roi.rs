//! The element's `inference-region=roi-list` side: the objects of a frame, their
//! inference as a batch, and their entries, inferred or held.

use super::*;

impl StableKeypoints {
    /// With `inference-region=roi-list`, what selects the objects.
    pub(super) fn object_settings(&self, s: &Settings) -> Option<ObjectSettings> {
        let crop = lock(&self.state).as_ref().map(|st| st.crop)?;
        s.objects(crop)
    }

    /// The objects of `buffers` (frames with item keys `keys`), inferred in batches of
    /// `object-batch-size` crops; queued in `inferred_objects` for their frames.
    pub(super) fn infer_objects(
        &self,
        buffers: &[&gst::BufferRef],
        keys: &[u64],
        info: &gst_video::VideoInfo,
        o: &ObjectSettings,
    ) -> Result<(), gst::FlowError> {
        let size = (info.width(), info.height());
        let crops: Vec<Vec<Crop>> = buffers.iter().map(|b| self.select(b, size, o)).collect();
        let (regions, crop_keys) = objects::regions(&crops, keys);
        let mut found = if regions.is_empty() {
            Vec::new()
        } else {
            let work = Work::Regions(&regions, o.batch);
            self.infer(buffers, &crop_keys, info, work)?
        }
        .into_iter();
        lock(&self.stats).objects_inferred += regions.len() as u64;
        let mut st = lock(&self.state);
        let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
        for c in crops {
            let k: Vec<Vec<Keypoint>> = found.by_ref().take(c.len()).collect();
            state.inferred_objects.push_back((c, k));
        }
        Ok(())
    }

    /// The objects of one frame to infer (or to hold), with the statistics and warnings of
    /// those left out.
    pub(super) fn select(
        &self,
        buffer: &gst::BufferRef,
        size: (u32, u32),
        o: &ObjectSettings,
    ) -> Vec<Crop> {
        let sel = objects::select(buffer, size, o);
        lock(&self.stats).selected(&sel);
        for (kind, what) in sel.warnings(o) {
            gst::debug!(CAT, imp = self, "{}", what);
            let first = lock(&self.state).as_mut().is_some_and(|st| {
                !st.warned.contains(&kind) && {
                    st.warned.push(kind);
                    true
                }
            });
            if first {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("{} (warned once; counted in stats)", what)
                );
            }
        }
        sel.crops
    }

    /// The entries of a frame's objects: inferred now (queued by [`Self::infer_objects`]),
    /// or held from earlier inferences; on a frame the interval skips, objects not seen
    /// before are inferred on it.
    pub(super) fn object_entries(
        &self,
        buffer: &gst::BufferRef,
        frame: &FrameContext,
        (origin, index, key): (stream::Origin, u64, u64),
        o: &ObjectSettings,
        threshold: f32,
    ) -> Result<Vec<FrameKeypoints>, gst::FlowError> {
        let size = (frame.info.width(), frame.info.height());
        let (crops, inferred) = if origin == stream::Origin::Inference {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            let (c, k) = state.inferred_objects.pop_front().unwrap_or_default();
            (c, Some(k))
        } else {
            (self.select(buffer, size, o), None)
        };
        let mut resolved = {
            let mut st = lock(&self.state);
            let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
            state.objects.resolve(index, &crops, size, inferred, true)
        };
        let mut origins = vec![origin; resolved.len()];
        if origin != stream::Origin::Inference {
            lock(&self.stats).objects_held +=
                resolved.iter().filter(|r| r.keypoints.is_some()).count() as u64;
        }
        if origin == stream::Origin::Interval {
            let new = self.infer_new_objects(buffer, &frame.info, &crops, key, &mut resolved, o)?;
            for i in new {
                origins[i] = stream::Origin::Inference;
            }
        }
        Ok(resolved
            .into_iter()
            .zip(origins)
            .filter_map(|(r, origin)| {
                Some(frame.entry(&r.keypoints?, Some(r.object), origin, threshold))
            })
            .collect())
    }

    /// Infers the objects of a skipped frame (item key `key`) that have no keypoints yet
    /// (seen for the first time), as DL Streamer's classifiers do with new objects between
    /// their intervals, and keeps their keypoints for the frames after; their indices.
    pub(super) fn infer_new_objects(
        &self,
        buffer: &gst::BufferRef,
        info: &gst_video::VideoInfo,
        crops: &[Crop],
        key: u64,
        resolved: &mut [objects::Resolved],
        o: &ObjectSettings,
    ) -> Result<Vec<usize>, gst::FlowError> {
        let new: Vec<usize> = (0..resolved.len())
            .filter(|&i| resolved[i].keypoints.is_none())
            .collect();
        if new.is_empty() {
            return Ok(new);
        }
        // Each object its key as on an inferred frame.
        let regions: Vec<_> = new.iter().map(|&i| (0, crops[i].region)).collect();
        let keys: Vec<u64> = new.iter().map(|&i| objects::object_key(key, i)).collect();
        let work = Work::Regions(&regions, o.batch);
        let found = self.infer_counted(&[buffer], &keys, info, work, false)?;
        lock(&self.stats).objects_inferred += new.len() as u64;
        let mut st = lock(&self.state);
        let state = st.as_mut().ok_or(gst::FlowError::Flushing)?;
        for (&i, k) in new.iter().zip(found) {
            let r = &mut resolved[i];
            state
                .objects
                .adopt(r.object.id, &k, r.object.bbox, crops[i].view);
            r.keypoints = Some(k);
        }
        Ok(new)
    }
}
