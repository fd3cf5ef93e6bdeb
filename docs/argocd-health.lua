-- Argo CD health check for kubetune.io/TuneExperiment (see docs/gitops.md).
-- Healthy: the experiment succeeded. Progressing: pending or running, or the operator has not
-- yet observed the newest spec. Suspended: spec.suspend is true. Degraded: failed or stalled
-- (a bad spec, a missing Secret, trials out of retries).
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "The experiment is suspended (spec.suspend): no new trials start"
  return hs
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubetune operator to pick up the experiment"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if status.phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = status.message or (stalled ~= nil and stalled.message) or "The experiment failed"
  return hs
end

local ready = condition(status, "Ready")
if status.phase == "Succeeded" or (ready ~= nil and ready.status == "True") then
  hs.status = "Healthy"
  local best = status.bestTrial
  if best ~= nil and best.name ~= nil then
    hs.message = "Succeeded; best trial " .. best.name .. " (" .. tostring(best.metric) .. ")"
  else
    hs.message = "Succeeded"
  end
  return hs
end

if status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = status.message or "The experiment is suspended"
  return hs
end

hs.status = "Progressing"
local trials = status.trials
if trials ~= nil and trials.total ~= nil then
  hs.message = status.phase .. ": " .. tostring(trials.running or 0) .. " running, "
    .. tostring(trials.terminated or 0) .. " terminated of " .. tostring(trials.total) .. " trials"
else
  hs.message = status.message or status.phase
end
return hs
